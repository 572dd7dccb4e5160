"""What a registration answers for files another registration inserted: only what that one kept.

A register call inserts its records, then may give some up (below a directory move, a replica
at a held path, a GUID being moved: `catalogue.files._outside_moves`) and delete them, and only
then claims its call (`catalogue.usage.record_registered`). A second call registering the same
files meets those records as existing ones; had it answered `successful` at once (and taken the
first call over, counting its records), its caller would be told of files the first then
deleted. So it first waits (up to SETTLE_WAIT) for the calls named in those records to claim
theirs, and reads the records again: the ones given up are gone. A call not settled by then
died (an outage cut it short) and is taken over, as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.directories import find_by_ids
from catalogue.usage import REGISTERED_IN, WITHDRAWN, counted_calls
from kernel.db import Document

SETTLE_WAIT = 2.0  # seconds; a live call claims within milliseconds of its insert
GIVEN_UP = "registered at the same time by another request, which gave it up; try again"


async def settled(db: AsyncDatabase[Document], stored: Mapping[str, Document]) -> dict[str, Document]:
    """`stored` (records as read, by LFN) as they are once the register calls that inserted them
    settled: read again if any had not, without those given up (gone, or being withdrawn)."""
    if not await wait_settled(db, stored.values()) and not any(doc.get(WITHDRAWN) for doc in stored.values()):
        return dict(stored)
    again = await find_by_ids(db[FILES], stored)
    return {lfn: doc for lfn, doc in again.items() if not doc.get(WITHDRAWN)}


async def wait_settled(db: AsyncDatabase[Document], records: Iterable[Mapping[str, object]]) -> bool:
    """Wait (up to SETTLE_WAIT) until the register calls that inserted these records (read with
    REGISTERED_IN) have settled; whether any had not when asked. A removal waits so before it
    takes a call over (`catalogue.file_removal`): a take-over counts every record of the call,
    also those it then gives up, deleted uncounted."""
    calls = {str(doc[REGISTERED_IN]) for doc in records if doc.get(REGISTERED_IN)}
    waiting = calls - await counted_calls(db, calls) if calls else set()
    if not waiting:
        return False
    deadline = time.monotonic() + SETTLE_WAIT
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        waiting -= await counted_calls(db, waiting)
    return True
