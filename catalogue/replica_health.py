"""Replicas whose bytes are gone: the catalogue side of consistency checks.

`replicas_on` walks an SE's replicas in LFN order, a page at a time (each page read to its end,
so no cursor stays open while others write `files`). `mark_lost` sets a replica `lost`; the change
feed gets its `replica_status` event, from which the rules holding locks on it put them back to
replicating (`rules.feed`), so they copy the file again from another replica.
`mark_bad` sets a replica whose bytes differ from its file `bad`.
`report_suspicious` counts reports that a replica was missing when read; `threshold` of them
mark it lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.directories import now
from catalogue.files import fetch_files
from catalogue.replicas import set_replica_status, set_replica_statuses
from catalogue.storage_paths import PATH_LFN
from kernel.db import Document, database_errors, pages_by_id

# A replica in these states is expected on storage; `copying` ones are still being written.
EXPECTED_ON_STORAGE = ("available", "unavailable", "bad")


@dataclass(frozen=True)
class CatalogueReplica:
    """One replica of an SE as the auditor compares it: its file's LFN, size and adler32, its status."""

    lfn: str
    size: int
    status: str
    created: Any
    adler32: str | None = None


async def replicas_on(db: AsyncDatabase[Document], se: str, *, page: int) -> AsyncIterator[CatalogueReplica]:
    """The replicas on se, in LFN order; memory holds one page. Index: files_by_replica_se_lfn.
    A moved file's replica is left out: its bytes lie at another LFN's path, out of this order
    (`catalogue.moved_paths`; the auditor leaves those paths out of the storage side too)."""
    projection = {"size": 1, "adler32": 1, "replicas.se": 1, "replicas.status": 1, "replicas.created": 1,
                  f"replicas.{PATH_LFN}": 1}
    async for doc in pages_by_id(db[FILES], {"replicas.se": se}, projection, page=page):
        mine = next(r for r in doc.get("replicas", []) if r.get("se") == se)
        if mine.get(PATH_LFN):
            continue
        yield CatalogueReplica(doc["_id"], int(doc.get("size") or 0), str(mine.get("status")), mine.get("created"),
                               doc.get("adler32"))


async def other_copies(db: AsyncDatabase[Document], lfn: str, se: str) -> int:
    """How many available replicas lfn has on SEs other than se."""
    with database_errors():
        doc = await db[FILES].find_one({"_id": lfn}, {"replicas.se": 1, "replicas.status": 1})
    return sum(1 for r in (doc or {}).get("replicas", []) if r.get("se") != se and r.get("status") == "available")


async def mark_lost(db: AsyncDatabase[Document], lfn: str, se: str) -> bool:
    """Mark lfn's replica on se `lost` (from any status that expects bytes on storage); True when
    this call marked it."""
    for status in EXPECTED_ON_STORAGE:
        if await set_replica_status(db, lfn, se, "lost", expected=status):
            return True
    return False


async def mark_bad(db: AsyncDatabase[Document], lfn: str, se: str, expected: str) -> bool:
    """Mark lfn's replica on se `bad` (its bytes on storage are not the file's: a size or checksum
    mismatch) if it is still in status `expected` (available or unavailable); True when marked.
    Readers then skip it and it is listed for triage (`replica_triage`), as after a transfer or
    a download found its checksum wrong."""
    if expected not in ("available", "unavailable"):
        return False
    return await set_replica_status(db, lfn, se, "bad", expected=expected)


async def mark_lost_many(db: AsyncDatabase[Document], se: str, lfns: Sequence[str]) -> dict[str, int]:
    """`mark_lost` for many replicas of se at once (the bulk status path: a few writes per batch,
    not one per replica). Answers, per LFN marked now, how many available copies it has left."""
    if not lfns:
        return {}
    files = await fetch_files(db, lfns, {"replicas": 1})
    items = []
    for lfn, doc in files.items():
        mine = next((r for r in doc.get("replicas", []) if r.get("se") == se), None)
        if mine is not None and mine.get("status") in EXPECTED_ON_STORAGE:
            items.append({"lfn": lfn, "se": se, "status": "lost", "expected": mine.get("status")})
    result = await set_replica_statuses(db, items, files)
    left: dict[str, int] = {}
    for lfn in result["successful"]:
        left[lfn] = sum(1 for r in files[lfn].get("replicas", [])
                        if r.get("se") != se and r.get("status") == "available")
    return left


async def report_suspicious(db: AsyncDatabase[Document], lfn: str, se: str, *, threshold: int, reason: str) -> str:
    """Count one report that lfn's replica on se was missing on storage; the `threshold`-th marks
    it lost. Answers the replica's state afterwards: "suspicious", "lost" or "absent", or
    "not_expected" (nothing counted) for a replica whose bytes are not expected on storage yet (one
    being written: a count taken then stayed, and the first miss after its copy marked it lost)."""
    for _ in range(5):
        with database_errors():
            doc = await db[FILES].find_one({"_id": lfn}, {"replicas": 1})
        found = [(i, r) for i, r in enumerate((doc or {}).get("replicas", [])) if r.get("se") == se]
        if not found:
            return "absent"
        index, replica = found[0]
        if replica.get("status") == "lost":
            return "lost"
        if replica.get("status") not in EXPECTED_ON_STORAGE:
            return "not_expected"
        count = int(replica.get("suspicions") or 0)
        with database_errors():
            result = await db[FILES].update_one(
                {"_id": lfn, f"replicas.{index}.se": se, f"replicas.{index}.suspicions": replica.get("suspicions")},
                {"$set": {f"replicas.{index}.suspicions": count + 1, f"replicas.{index}.suspected": now(),
                          f"replicas.{index}.suspicion": reason[:500]}})
        if result.matched_count == 1:
            if count + 1 >= threshold and await mark_lost(db, lfn, se):
                return "lost"
            return "suspicious"
    return "suspicious"
