"""The refresh of a dynamic dataset: its query run again, its contents made the result.

A refresh marks the dataset (`refreshing`, `kernel.marks`) so that no close or freeze lands
between its writes, renews the mark before each batch of writes, and sets the counts to the
result's totals as it takes the mark off (`catalogue.datasets` for the state machine). It holds a
claim on the dataset while it writes, so the counts of a refresh cut short are recounted from the
rows by the transfer workers' sweep (`catalogue.dataset_count_claims`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import DATASET_FILES, attach_rows, delete_rows, refused_existing, row_id
from catalogue.dataset_count_claims import counting
from catalogue.dataset_counts import counts_set
from catalogue.datasets import DATASETS, REFRESH_LEASE, REFRESHING, get_did, writable_did
from catalogue.directories import now
from catalogue.find import open_query
from catalogue.permissions import READ
from kernel.db import INDEX_ORDER, Document, database_errors, iterate
from kernel.errors import Conflict, InvalidInput, ServiceUnavailable
from kernel.marks import Mark
from kernel.principal import Principal

REFRESH_BATCH = 1000


async def refresh(db: AsyncDatabase[Document], principal: Principal, did: str) -> Document:
    """Re-run a dynamic dataset's query and make its contents the result (open datasets only).

    The query's results and the stored contents are both read sorted by LFN and merged, so
    only the difference is written, in batches, in constant memory; the counts are then set to
    the result's totals.
    """
    doc = await writable_did(db, principal, did, "dataset")
    if doc.get("query") is None:
        raise InvalidInput(f"{did} is not dynamic (it has no query)")
    results = await open_query(db, principal, doc["query"], scope=doc.get("path", "/"))
    mark = Mark(REFRESHING, REFRESH_LEASE)
    await _hold_for_refresh(db, did, mark)
    try:
        async with counting(db, did):  # a refresh cut short: the sweep recounts its dataset
            return await _refreshed(db, principal, did, results, mark)
    except BaseException:
        await asyncio.shield(mark.take_off(db[DATASETS], [did]))
        raise


async def _hold_for_refresh(db: AsyncDatabase[Document], did: str, mark: Mark) -> None:
    """Mark an open dataset as refreshed by this call (409 when closed or frozen meanwhile, or
    refreshed by another call)."""
    with database_errors():
        held = await db[DATASETS].update_one({"_id": did, "state": "open", **mark.free()},
                                             {"$set": {REFRESHING: mark.value()}})
    if not held.matched_count:
        state = (await get_did(db, did))["state"]
        if state != "open":
            raise Conflict(f"{did} is {state}: contents change only while it is open")
        raise Conflict(f"{did} is being refreshed by another call; try again when it ends")


async def _still_refreshing(db: AsyncDatabase[Document], did: str, mark: Mark) -> None:
    """Renew this call's mark before a write; 503 when it lapsed (a close or freeze may have
    landed since: nothing more is written)."""
    with database_errors():
        renewed = await db[DATASETS].update_one({"_id": did, **mark.mine()}, {"$set": {f"{REFRESHING}.at": now()}})
    if not renewed.matched_count:
        raise ServiceUnavailable(f"the refresh of {did} took too long and was given up; refresh it again")


async def _refreshed(db: AsyncDatabase[Document], principal: Principal, did: str,
                     results: AsyncIterator[Document], mark: Mark) -> Document:
    """Write the difference between `results` and the stored rows, then the counts, and take
    the mark off. A stored row the caller's query could not return because the caller may not
    read its file stays (and counts): not shown to a caller is not gone (a group member with
    less access dropped the owner's files, and the locks of rules on the dataset with them)."""
    stored = iterate(db[DATASET_FILES].find({"did": did}, {"lfn": 1, "size": 1}, comment=INDEX_ORDER)
                     .sort("lfn", 1).batch_size(5000))
    files = size = 0
    adds: list[Document] = []
    drops: list[Document] = []

    async def drop() -> None:
        nonlocal files, size
        kept = await refused_existing(db, principal, [row["lfn"] for row in drops], READ)
        files += len(kept)
        size += sum(int(row.get("size", 0)) for row in drops if row["lfn"] in kept)
        await _still_refreshing(db, did, mark)
        await delete_rows(db, [row["_id"] for row in drops if row["lfn"] not in kept])
        drops.clear()

    current = await anext(stored, None)
    async for found in results:
        lfn = found["_id"]
        files += 1
        size += int(found.get("size", 0))
        if files % REFRESH_BATCH == 0:  # a long read that writes nothing keeps its mark too
            await _still_refreshing(db, did, mark)
        while current is not None and current["lfn"] < lfn:
            drops.append(current)
            current = await anext(stored, None)
        if len(drops) >= REFRESH_BATCH:
            await drop()
        if current is not None and current["lfn"] == lfn:
            current = await anext(stored, None)
        else:
            adds.append({"_id": row_id(did, lfn), "did": did, "lfn": lfn, "size": int(found.get("size", 0))})
        if len(adds) >= REFRESH_BATCH:
            await _still_refreshing(db, did, mark)
            await attach_rows(db, adds)
            adds = []
    while current is not None:
        drops.append(current)
        current = await anext(stored, None)
        if len(drops) >= REFRESH_BATCH:
            await drop()
    await drop()
    await _still_refreshing(db, did, mark)
    await attach_rows(db, adds)
    counts = counts_set({"files": files, "bytes": size})
    with database_errors():
        updated = await db[DATASETS].find_one_and_update(
            {"_id": did, **mark.mine()}, {"$set": {**counts["$set"], "refreshed": now(), "modified": now()},
                                          "$unset": {**counts.get("$unset", {}), REFRESHING: ""}},
            return_document=True)
    if updated is None:
        raise ServiceUnavailable(f"the refresh of {did} took too long and was given up; refresh it again")
    return updated
