"""Riding out an API that is briefly away (a server restarted, a load balancer switching, the
database failing over): calls made under `riding_out(s)` that meet ServiceUnavailable (no
connection, or a 503) are tried again, backing off up to the server's Retry-After, until
they succeed or `s` seconds have passed since the first try. Only for work whose every call is
safe to send twice, as an upload's and a download's are (`dataio.client`): a registration made
by this upload's writer is found as its own, a flip or an undo guarded by that writer is refused
once done and then read back, a lease is renewed again. The SDK's reads and PUTs ride it out
always (`kernel.client.IDEMPOTENT_METHODS`), its calls that are safe to send twice do so under
`riding_out`, among them those that name themselves so that the server does their work once
however often they are sent (`rules.rule_requests`, `wms.submission_requests`). The command line
is told when a call begins to wait (`noticing`)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from kernel.errors import ServiceUnavailable

T = TypeVar("T")
FIRST_PAUSE_S = 0.25
LONGEST_PAUSE_S = 5.0
_PATIENCE: contextvars.ContextVar[float] = contextvars.ContextVar("cairn_ride_out_s", default=0.0)
# Told when a call starts waiting (the error it met, the seconds it may still wait): the command
# line says so on stderr, so that a user is not left before a silent wait.
_NOTICE: contextvars.ContextVar[Callable[[ServiceUnavailable, float], None] | None] = contextvars.ContextVar(
    "cairn_ride_out_notice", default=None)


@contextlib.contextmanager
def riding_out(seconds: float) -> Iterator[None]:
    """Calls made inside (and in tasks started inside) ride out an API away for up to `seconds`."""
    token = _PATIENCE.set(max(0.0, seconds))
    try:
        yield
    finally:
        _PATIENCE.reset(token)


@contextlib.contextmanager
def noticing(notice: Callable[[ServiceUnavailable, float], None]) -> Iterator[None]:
    """Inside, `notice(error, seconds_left)` is called when a call begins to wait for the API."""
    token = _NOTICE.set(notice)
    try:
        yield
    finally:
        _NOTICE.reset(token)


def patience(at_least: float = 0.0) -> float:
    """How long a call made now may ride out an API away: `riding_out`'s, or at_least."""
    return max(_PATIENCE.get(), at_least)


async def patiently(call: Callable[[], Awaitable[T]], *, at_least: float = 0.0,
                    only: type[ServiceUnavailable] = ServiceUnavailable) -> T:
    """call(), tried again while it raises ServiceUnavailable (`only` that kind of it: another
    is raised at once), for as long as `riding_out` allows (or `at_least` seconds: a call safe
    to send again whatever the caller's context)."""
    seconds = patience(at_least)
    if seconds <= 0:
        return await call()
    deadline, pause = time.monotonic() + seconds, FIRST_PAUSE_S
    while True:
        try:
            return await call()
        except ServiceUnavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0 or not isinstance(exc, only):
                raise
            if pause == FIRST_PAUSE_S and (notice := _NOTICE.get()) is not None:
                notice(exc, left)
            await asyncio.sleep(min(left, pause))
            # Doubling, up to the server's Retry-After (a restart answers nothing: 5 s) and LONGEST_PAUSE_S.
            pause = min(pause * 2, max(FIRST_PAUSE_S, min(float(exc.retry_after), LONGEST_PAUSE_S)))
