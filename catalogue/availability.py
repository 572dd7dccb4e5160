"""Where many files are available: the SEs holding an `available` replica of each, read in a
number of round trips that does not grow with the size of the catalogue times the number of files.

A few files are read by `_id $in` in slices of `IN_SLICE` (index-backed on MongoDB). A set larger
than one slice that is a good part of the `files` collection (at least 1/`SCAN_FRACTION` of its
estimated count) is read with one cursor over the whole collection instead, keeping only the
wanted files: on MongoDB that sequential read beats as many index lookups, and on FerretDB, which
evaluates every filter other than `{_id: <string>}` by scanning the collection, it replaces one
scan per slice by one scan.

The answer holds a tuple of interned SE names per file (about 120 bytes per file beyond its LFN).
The cursor is read to its end before returning, so callers may write afterwards (FerretDB's
SQLite backend blocks writers behind an open cursor on the same collection).
"""

from __future__ import annotations

import sys
from collections.abc import Collection

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from kernel.db import Document, database_errors

IN_SLICE = 10_000
SCAN_FRACTION = 8
PROJECTION = {"replicas.se": 1, "replicas.status": 1}


def _available(doc: Document) -> tuple[str, ...]:
    return tuple(sys.intern(r["se"]) for r in doc.get("replicas", []) if r.get("status") == "available")


async def available_on(db: AsyncDatabase[Document], lfns: Collection[str]) -> dict[str, tuple[str, ...]]:
    """The SEs each of `lfns` has an available replica on (files that do not exist are absent)."""
    wanted = set(lfns)
    if not wanted:
        return {}
    out: dict[str, tuple[str, ...]] = {}
    with database_errors():
        # Up to one slice is one query either way (and a count costs a scan on FerretDB).
        if len(wanted) > IN_SLICE and len(wanted) * SCAN_FRACTION >= await db[FILES].estimated_document_count():
            async for doc in db[FILES].find({}, PROJECTION).batch_size(IN_SLICE):
                if doc["_id"] in wanted:
                    out[doc["_id"]] = _available(doc)
            return out
        ordered = sorted(wanted)
        for start in range(0, len(ordered), IN_SLICE):
            part = ordered[start:start + IN_SLICE]
            # Index: _id.
            async for doc in db[FILES].find({"_id": {"$in": part}}, PROJECTION).batch_size(len(part)):
                out[doc["_id"]] = _available(doc)
    return out
