"""Moves done once however often their call is sent: the caller names its move (`request_id`, a
key of its own choosing; the SDK names every move), and the record the move places (a file's
record at its new LFN, a directory's at its new path) carries the call's stamp (MOVED_BY: the
caller's key for that request id, and what it asked). A sending after the first one's answer was
lost (a server restart, a broken connection, a script run again with `--request-id`) finds the
record its first sending placed and answers it, where it answered 404 for its own work before.

A stamped record whose move is not finished (a file's copy not yet placed, a directory still
filling under its mark) answers 503 with Retry-After, which the SDK waits on as on an API away:
the first sending finishes it, or the workers' sweep a move cut short (or takes a file's back, and
the move is then made by the next sending). A stamp names the caller,
so nobody else's sending can match it; the same request id sent for another move does not match
either (the stamp carries the move asked for) and is judged as a new move.
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import vo_stamp
from catalogue.namespace import find_entry
from catalogue.usage import COPY_CALL, MOVED_BY, MOVING
from kernel.db import Document
from kernel.errors import ServiceUnavailable
from kernel.principal import Principal
from kernel.request_ids import call_key, digest


def stamp(principal: Principal, request_id: str, source: str, destination: str) -> str:
    """The stamp of the caller's move named request_id, of `source` to `destination`."""
    return f"{call_key('move-request', vo_stamp(principal), principal.sub, request_id)}:{digest([source, destination])}"


async def done_before(db: AsyncDatabase[Document], destination: str, stamped: str) -> tuple[Document, str] | None:
    """The entry an earlier sending of this move placed at `destination`, with its kind (None:
    none did); 503 while that move is still being finished."""
    found = await find_entry(db, destination)
    if found is None or found[0].get(MOVED_BY) != stamped:
        return None
    if {COPY_CALL, "moving_guid", MOVING} & set(found[0]):
        raise ServiceUnavailable(f"this request's move to {destination} is being finished; try again")
    return found
