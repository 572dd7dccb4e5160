"""The writes of a DID's counts (a dataset's `files` and `bytes`, a container's `children`).

Sizes are what clients claim: a dataset's bytes may pass what an int64 holds. A `$inc` passing it
is refused by the database, and so was every later one of that dataset (every attach of a sized
file, every detach). So each addition is a `$inc` guarded against passing the bound, and a sum
past it is stored at the bound, the DID marked `saturated` (`kernel.counters`; `cairn dataset
rebuild-counts` sets it again from the rows)."""

from __future__ import annotations

from collections.abc import Mapping

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.datasets import DATASETS
from catalogue.directories import now
from kernel.bounds import INT64_MAX
from kernel.counters import SATURATED, counter_write, saturated_record
from kernel.db import Document, database_errors
from kernel.errors import Conflict

WRITE_TRIES = 5


async def add_counts(db: AsyncDatabase[Document], did: str, delta: Mapping[str, int], *,
                     open_only: bool = False) -> bool:
    """Add `delta` to the DID's counts (and set its `modified`), without passing the int64 range:
    a guarded `$inc` first (no read: the usual case), then, if it missed, a read and the write
    `kernel.counters.counter_write` makes of what was read. False when there is no such DID (or,
    with `open_only`, none that is open): nothing written."""
    state = {"state": "open"} if open_only else {}
    read: Document | None = None
    for _ in range(WRITE_TRIES):
        if read is None and any(abs(value) > INT64_MAX for value in delta.values()):
            read = await _read(db, did, state, delta)
            if read is None:
                return False
        guard, update = counter_write(read or {}, delta) if read is not None else _optimistic(delta)
        update = {**update, "$set": {**update.get("$set", {}), "modified": now()}}
        with database_errors():
            if (await db[DATASETS].update_one({"_id": did, **state, **guard}, update)).matched_count:
                return True
        read = await _read(db, did, state, delta)
        if read is None:
            return False
    raise Conflict(f"the counts of {did} kept changing while this call was counted; try again")


def _optimistic(delta: Mapping[str, int]) -> tuple[Document, Document]:
    """The guarded `$inc` of `delta` whatever the counts are, missing where one would pass the range."""
    guard, update = counter_write({field: 0 for field in delta}, delta)
    return guard, update


async def _read(db: AsyncDatabase[Document], did: str, state: Document, delta: Mapping[str, int]) -> Document | None:
    with database_errors():
        return await db[DATASETS].find_one({"_id": did, **state}, {field: 1 for field in delta})


def counts_set(counts: Mapping[str, int]) -> Document:
    """The update giving a DID `counts` (a refresh's totals): at the bound, marked, past the range."""
    record = saturated_record(counts)
    return {"$set": record} if SATURATED in record else {"$set": record, "$unset": {SATURATED: ""}}
