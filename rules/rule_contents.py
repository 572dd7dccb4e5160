"""What a rule's DID covers: its type and bytes, the datasets below a container, and every file
it covers grouped by the rule's grouping."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import DATASET_FILES, linked_dids
from catalogue.datasets import DATASETS, check_did
from catalogue.files import FILES
from catalogue.lfn import check_lfn
from kernel.db import INDEX_ORDER, Document, database_errors, read_by_ids
from kernel.errors import NotFound


async def did_target(db: AsyncDatabase[Document], did: str) -> tuple[str, int]:
    """(type, bytes) of a rule's DID: a file (LFN), dataset or container; NotFound otherwise."""
    with database_errors():
        if did.startswith("/"):
            check_lfn(did)
            doc = await db[FILES].find_one({"_id": did}, {"size": 1})
            if doc is None:
                raise NotFound(f"file {did} does not exist")
            return "file", int(doc.get("size", 0))
        check_did(did)
        doc = await db[DATASETS].find_one({"_id": did})
        if doc is None:
            raise NotFound(f"DID {did} does not exist")
        if doc["type"] == "dataset":
            return "dataset", int(doc.get("bytes", 0))
        datasets = await datasets_below(db, did)
        found = [d async for d in read_by_ids(db[DATASETS], datasets, {"bytes": 1})]
        # An upper bound: a file in two of the datasets is in both sums (see `distinct_bytes`).
        return "container", sum(int(d.get("bytes", 0)) for d in found)


async def distinct_bytes(db: AsyncDatabase[Document], container: str) -> int:
    """The bytes of the distinct files below a container (a file in several of its datasets once):
    one read of each dataset's memberships, holding the LFNs seen.
    Index: dataset_files_by_did_lfn (one dataset at a time: a `$in` of them reads every membership
    of every dataset on the embedded database)."""
    datasets = await datasets_below(db, container)
    seen: set[str] = set()
    total = 0
    for dataset in datasets:
        with database_errors():
            rows = await db[DATASET_FILES].find({"did": dataset}, {"lfn": 1, "size": 1}, comment=INDEX_ORDER) \
                .batch_size(10_000).to_list()
        for row in rows:
            if row["lfn"] not in seen:
                seen.add(row["lfn"])
                total += int(row.get("size", 0))
    return total


async def datasets_below(db: AsyncDatabase[Document], container: str) -> list[str]:
    """Every dataset reachable below a container, sorted (`dataset_contents.linked_dids`)."""
    seen, _ = await linked_dids(db, [container], down=True)
    return sorted([d["_id"] async for d in read_by_ids(db[DATASETS], seen, {"_id": 1}, flt={"type": "dataset"})])


async def rule_files(db: AsyncDatabase[Document], rule: Document) -> AsyncIterator[tuple[str, str, int]]:
    """Every file a rule covers as (group, lfn, size); the group follows the rule's grouping."""
    did, grouping = rule["did"], rule["grouping"]
    if rule["did_type"] == "file":
        with database_errors():
            doc = await db[FILES].find_one({"_id": did}, {"size": 1})
        if doc is not None:
            yield did, did, int(doc.get("size", 0))
        return
    datasets = [did] if rule["did_type"] == "dataset" else await datasets_below(db, did)
    seen: set[str] = set()
    for dataset in datasets:
        # One cursor per dataset read to its end before yielding (FerretDB's SQLite backend blocks
        # writers behind an open cursor, and would scan the collection once per page).
        # Index: dataset_files_by_did_lfn.
        with database_errors():
            rows = await db[DATASET_FILES].find({"did": dataset}, {"lfn": 1, "size": 1}, comment=INDEX_ORDER) \
                .sort("lfn", 1).batch_size(10_000).to_list()
        for row in rows:
            if row["lfn"] in seen:
                continue
            if rule["did_type"] == "container":
                seen.add(row["lfn"])
            group = did if grouping == "ALL" else dataset if grouping == "DATASET" else str(row["lfn"])
            yield group, row["lfn"], int(row.get("size", 0))
