"""Bad replicas for triage: replicas whose status is `bad` (a checksum mismatch seen by a
download or a transfer), listed one page at a time by LFN (index files_by_replica_status)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from kernel.db import Document, IndexSpec, database_errors

INDEXES = [IndexSpec(FILES, [("replicas.status", 1), ("_id", 1)], name="files_by_replica_status")]


async def bad_replicas(db: AsyncDatabase[Document], *, se: str | None = None, after: str | None = None,
                       limit: int = 1000) -> dict[str, Any]:
    """`{"replicas": [{lfn, se, size, adler32, good_copies}], "next_after": lfn | None}`: the bad
    replicas of up to `limit` files after the LFN `after`, with how many good copies each file has."""
    # Not $elemMatch: FerretDB 1.24 matches nothing with it. A file with a bad replica elsewhere
    # and a good one on `se` is read too, and contributes no row.
    query: dict[str, Any] = {"replicas.status": "bad", **({"replicas.se": se} if se else {})}
    if after:
        query["_id"] = {"$gt": after}
    with database_errors():
        docs = await db[FILES].find(query, {"size": 1, "adler32": 1, "replicas": 1}).sort("_id", 1).limit(
            limit + 1).to_list()
    rows: list[dict[str, Any]] = []
    for doc in docs[:limit]:
        good = sum(1 for r in doc.get("replicas", []) if r.get("status") == "available")
        rows.extend({"lfn": doc["_id"], "se": r["se"], "size": doc.get("size"), "adler32": doc.get("adler32"),
                     "good_copies": good}
                    for r in doc.get("replicas", []) if r.get("status") == "bad" and (se is None or r["se"] == se))
    return {"replicas": rows, "next_after": docs[limit - 1]["_id"] if len(docs) > limit else None}
