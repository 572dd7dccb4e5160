"""What a per-LFN reason of a bulk answer means as an error, for the SDK and the routes alike
(a module of its own so that the SDK's upload and download do not import the catalogue's
database layer)."""

from __future__ import annotations

from kernel.errors import CairnError, Conflict, Forbidden, NotFound


def refusal(lfn: str, reason: str) -> CairnError:
    """The error that a per-LFN reason of a bulk answer (`authorized_files`, replica calls) is
    for a call about that one file: 404 when the file or replica is not there, 403 when the
    caller may not, else 409."""
    if reason == "no such file":
        return NotFound(f"file {lfn} does not exist")
    if reason.startswith("permission denied"):
        return Forbidden(reason)
    if " has no replica on " in reason:
        return NotFound(reason)
    return Conflict(reason)
