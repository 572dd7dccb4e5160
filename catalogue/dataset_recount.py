"""The administrators' recount of what DIDs count: a dataset's `files` and `bytes`, a
container's `children`, from the rows of `dataset_files` and `container_children` (one pass over
each in keyset pages by `_id`: no cursor stays open).

Attach and detach keep them exact when calls race (`catalogue.dataset_contents`); what a call cut
short leaves (an attach charged before its rows went in, a detach that deleted its rows before it
took them off) is mended here: `cairn dataset rebuild-counts [--dry-run]`, `POST
/dids/rebuild-counts`. The DIDs are read before the rows and each is set only where its counts
still hold what was read (`kernel.recount`): one that an attach or detach moved meanwhile is
reported under `moved`, for another run."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import CONTAINER_CHILDREN
from catalogue.dataset_contents import DATASET_FILES
from catalogue.datasets import DATASETS
from kernel.counters import SATURATED, saturated_record
from kernel.db import STREAM_PAGE, Document, database_errors, pages_by_id
from kernel.recount import set_if_unmoved

FIELDS = {"dataset": ("files", "bytes"), "container": ("children",)}


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
