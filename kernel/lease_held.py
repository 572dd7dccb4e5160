"""Whether the work running here surely holds its lease (`kernel.lease.while_held` sets it):
`check_held()`, which a storage plugin calls before each deletion of a batch, with no database
driver loaded (the client's plugins import this, not `kernel.lease`)."""

from __future__ import annotations

import contextvars
import time


class LeaseLost(Exception):
    """The lease of the work running here may have run out: it stops, as if its holder had died."""


class _Held:
    """Until when (time.monotonic()) the work running in a context surely holds its lease."""

    def __init__(self, until: float) -> None:
        self.until = until


_HELD: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("cairn_lease_held", default=None)


def check_held() -> None:
    """Raise LeaseLost when the work running here holds its lease through `while_held` and that
    lease may have run out by now (see the module docstring); nothing outside such work."""
    held = _HELD.get()
    if held is not None and time.monotonic() > held.until:
        raise LeaseLost(f"lease not renewed for {time.monotonic() - held.until:.1f} s past its sure part")
