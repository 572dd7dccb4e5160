"""A moving file's GUID, held while no record carries it.

A GUID is unique (the sparse unique index `files_by_guid`), so a move's copy carries it as
`moving_guid` until its original is gone, and is given it back after (`catalogue.file_move`,
`catalogue.moves`). Between the two writes no record holds it: a registration naming that GUID
took it (6 of 150 single-file moves, 28 of 150 directory moves in a test), the copy's restore
then failed, and the moved file was left without its GUID while another file had it.

So a move holds the GUIDs in `guid_holds` (`_id` the GUID) before its originals leave, and lets
them go once its copies have them back; a registration naming GUIDs looks for holds after its
insert (which succeeded only in such a window, after the hold was made) and gives those records
up (`held`); the move's restore waits (up to RESTORE_WAIT) for such a record to go. A hold older
than HOLD_LEASE (a move cut short) holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

from catalogue.directories import DUPLICATE_KEY
from catalogue.usage import COPY_CALL
from kernel.db import Document, bulk_write_chunked, database_errors, read_by_ids

GUID_HOLDS = "guid_holds"
HOLD_LEASE = dt.timedelta(minutes=10)
RESTORE_WAIT = 5.0  # seconds a move waits for a registration that took a GUID it holds to give it up
log = logging.getLogger(__name__)


async def hold(db: AsyncDatabase[Document], guids: Iterable[str | None]) -> None:
    """Hold `guids` for a move: one unordered insert (a hold left by a move cut short is renewed)."""
    at = dt.datetime.now(dt.UTC)
    wanted = sorted({g for g in guids if g})
    if not wanted:
        return
    try:
        with database_errors():
            await db[GUID_HOLDS].insert_many([{"_id": guid, "at": at} for guid in wanted], ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
        stale = [wanted[e["index"]] for e in exc.details.get("writeErrors", [])]
        with database_errors():
            await db[GUID_HOLDS].update_many({"_id": {"$in": stale}}, {"$set": {"at": at}})


async def release(db: AsyncDatabase[Document], guids: Iterable[str | None]) -> None:
    """Let the GUIDs go once the copies carry them again."""
    wanted = sorted({g for g in guids if g})
    if wanted:
        with database_errors():
            await db[GUID_HOLDS].delete_many({"_id": {"$in": wanted}})


async def held(db: AsyncDatabase[Document], guids: Iterable[str]) -> set[str]:
    """Of `guids`, those a live move holds (one read by `_id`)."""
    since = dt.datetime.now(dt.UTC) - HOLD_LEASE
    return {doc["_id"] async for doc in read_by_ids(db[GUID_HOLDS], guids, {"_id": 1}, flt={"at": {"$gt": since}})}


async def restore(files: AsyncCollection[Document], copies: Sequence[tuple[str, str]]) -> None:
    """Give each copy (`(lfn, GUID)`) its GUID back (from `moving_guid`): one bulk write, and,
    for a GUID a registration took meanwhile, again until it gave it up (it looks for the hold
    right after its insert), at most RESTORE_WAIT. A copy still without it keeps `moving_guid`."""
    pending = list(copies)
    deadline = time.monotonic() + RESTORE_WAIT
    while pending:
        with contextlib.suppress(BulkWriteError, OperationFailure):  # a GUID taken meanwhile: look again
            with database_errors():
                await bulk_write_chunked(files, [UpdateOne(  # a file move's copy: its call's token goes too
                    {"_id": lfn, "moving_guid": guid}, {"$set": {"guid": guid},
                                                        "$unset": {"moving_guid": "", COPY_CALL: ""}})
                    for lfn, guid in pending])
            return
        left = {doc["_id"] async for doc in read_by_ids(files, [lfn for lfn, _ in pending], {"_id": 1},
                                                         flt={"moving_guid": {"$exists": True}})}
        pending = [(lfn, guid) for lfn, guid in pending if lfn in left]
        if pending and time.monotonic() >= deadline:
            log.warning("%d moved file(s) could not take their GUID back (e.g. %s): another record holds it",
                        len(pending), pending[0][0])
            return
        await asyncio.sleep(0.02)
