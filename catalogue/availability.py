"""Where many files are available: the SEs holding an `available` replica of each, read by
`_id $in` in slices (kernel.db.read_by_ids; index-backed on MongoDB and on Cairn's FerretDB build, see
.ci/install-ferretdb), so the cost grows with the files asked for, not with the catalogue.

The answer holds a tuple of interned SE names per file (about 120 bytes per file beyond its LFN).
Each slice is read to its end before the next, and all before returning, so callers may write
afterwards (FerretDB's SQLite backend blocks writers behind an open cursor on the same collection).
"""

from __future__ import annotations

import sys
from collections.abc import Collection

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from kernel.db import Document, read_by_ids

PROJECTION = {"replicas.se": 1, "replicas.status": 1}


def available_ses(doc: Document) -> tuple[str, ...]:
    """The SEs a file record (read with at least PROJECTION) has an available replica on."""
    return tuple(sys.intern(r["se"]) for r in doc.get("replicas", []) if r.get("status") == "available")


async def available_on(db: AsyncDatabase[Document], lfns: Collection[str]) -> dict[str, tuple[str, ...]]:
    """The SEs each of `lfns` has an available replica on (files that do not exist are absent)."""
    wanted = set(lfns)
    if not wanted:
        return {}
    # Index: _id.
    return {doc["_id"]: available_ses(doc) async for doc in read_by_ids(db[FILES], wanted, PROJECTION)}
