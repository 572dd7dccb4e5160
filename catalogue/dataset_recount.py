"""The administrators' recount of what DIDs count: a dataset's `files` and `bytes`, a
container's `children`, from the rows of `dataset_files` and `container_children` (one pass over
each in keyset pages by `_id`: no cursor stays open).

Attach and detach keep them exact when calls race (`catalogue.dataset_contents`); what a call cut
short leaves (an attach charged before its rows went in, a detach that deleted its rows before it
took them off) is mended for that DID by the transfer workers' sweep (`settle_stale`, from the
claim the call left: `catalogue.dataset_count_claims`), and for every DID here: `cairn dataset
rebuild-counts [--dry-run]`, `POST /dids/rebuild-counts`. The DIDs are read before the rows and
each is set only where its counts still hold what was read (`kernel.recount`): one that an attach
or detach moved meanwhile is reported under `moved`, for another run."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import CONTAINER_CHILDREN
from catalogue.dataset_contents import DATASET_FILES
from catalogue.dataset_count_claims import CALLS, CLAIMS, LIVE_S
from catalogue.datasets import DATASETS
from catalogue.directories import now
from kernel.counters import SATURATED, saturated_record
from kernel.db import INDEX_ORDER, STREAM_PAGE, Document, database_errors, pages_by_id
from kernel.recount import set_if_unmoved

FIELDS = {"dataset": ("files", "bytes"), "container": ("children",)}
STALE_BATCH = 1000  # claims a sweep reads at a time (the rest at its next turn)


async def recount(db: AsyncDatabase[Document]) -> dict[str, dict[str, int]]:
    """Files and bytes per dataset, children per container, from their rows."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    async for row in pages_by_id(db[DATASET_FILES], {}, {"did": 1, "size": 1}, page=STREAM_PAGE):
        held = counts[row["did"]]
        held["files"] = held.get("files", 0) + 1
        held["bytes"] = held.get("bytes", 0) + int(row.get("size", 0))
    async for link in pages_by_id(db[CONTAINER_CHILDREN], {}, {"container": 1}, page=STREAM_PAGE):
        held = counts[link["container"]]
        held["children"] = held.get("children", 0) + 1
    return counts


async def rebuild(db: AsyncDatabase[Document], *, fix: bool = True) -> dict[str, Any]:
    """Recount every DID's counts, report those that drifted and, with `fix`, set them where they
    did not move meanwhile (see the module)."""
    with database_errors():
        dids = await db[DATASETS].find({}, {"type": 1, "files": 1, "bytes": 1, "children": 1, SATURATED: 1}).to_list()
    truth = await recount(db)
    drift: dict[str, Any] = {}
    moved: list[str] = []
    for did in dids:
        fields = FIELDS.get(did.get("type", "dataset"), FIELDS["dataset"])
        have = {f: int(did.get(f) or 0) for f in fields}
        want = {f: truth.get(did["_id"], {}).get(f, 0) for f in fields}
        record = saturated_record(want)  # a sum past the int64 range (claimed sizes) at its bound
        if {f: int(record[f]) for f in fields} == have and bool(did.get(SATURATED)) == (SATURATED in record):
            continue
        drift[did["_id"]] = {"stored": have, "recounted": want}
        was = {f: did.get(f) for f in fields if f in did}
        if did.get(SATURATED) and SATURATED not in record:
            record[SATURATED] = False
        if fix and not await set_if_unmoved(db[DATASETS], did["_id"], was, record, fields=fields):
            moved.append(did["_id"])
    return {"checked": len(dids), "drifted": len(drift), "fixed": fix, "moved": moved, "drift": drift}


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float) -> int:
    """The transfer workers' sweep of the claims of calls that died changing a DID's rows and
    counts (`catalogue.dataset_count_claims`): the claims not renewed for `older_than_s` (at
    least LIVE_S), the oldest STALE_BATCH; each of their DIDs with no live claim is recounted
    from its rows and set where its counts and `count_calls` did not move meanwhile, and its
    stale claims go. Returns how many claims were settled."""
    cutoff = now() - dt.timedelta(seconds=max(older_than_s, LIVE_S))
    with database_errors():
        stale = await db[CLAIMS].find({"at": {"$lt": cutoff}}, {"did": 1}, comment=INDEX_ORDER
                                      ).sort("at", 1).limit(STALE_BATCH).to_list()
    tokens: dict[str, list[str]] = defaultdict(list)
    for claim in stale:
        tokens[claim["did"]].append(claim["_id"])
    settled = 0
    for did, mine in sorted(tokens.items()):
        if await _recounted(db, did, cutoff):
            with database_errors():
                settled += (await db[CLAIMS].delete_many({"_id": {"$in": mine}})).deleted_count
    return settled


async def _recounted(db: AsyncDatabase[Document], did: str, cutoff: dt.datetime) -> bool:
    """Set one DID's counts from its rows unless a live call holds a claim on it or its counts or
    `count_calls` moved while its rows were counted; True when set (or the DID is gone)."""
    with database_errors():
        doc = await db[DATASETS].find_one({"_id": did}, {"type": 1, "files": 1, "bytes": 1, "children": 1,
                                                         SATURATED: 1, CALLS: 1})
        if doc is None:
            return True
        if await db[CLAIMS].find_one({"did": did, "at": {"$gte": cutoff}}, {"_id": 1}, comment=INDEX_ORDER):
            return False  # a live call's: its own writes count, and the sweep looks again later
    fields = FIELDS.get(doc.get("type", "dataset"), FIELDS["dataset"])
    counts = dict.fromkeys(fields, 0)
    rows, member = (DATASET_FILES, "size") if "files" in fields else (CONTAINER_CHILDREN, None)
    async for row in pages_by_id(db[rows], {}, {member: 1} if member else {"_id": 1}, after=f"{did}#",
                                 before=f"{did}$", page=STREAM_PAGE):
        counts[fields[0]] += 1
        if member:
            counts["bytes"] += int(row.get(member, 0))
    record: Document = saturated_record(counts)
    if doc.get(SATURATED) and SATURATED not in record:
        record[SATURATED] = False
    return await set_if_unmoved(db[DATASETS], did, doc, record, fields=(*fields, CALLS))
