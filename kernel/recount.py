"""What the administrators' recounts share (job counters, quota usage, catalogue usage): a counter
record is set to its recount only where it still holds what was read before the count, so a write
that lands while the count runs is never set back; the caller reports such a record as moved."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.errors import DuplicateKeyError

from kernel.db import Document, database_errors


async def set_if_unmoved(collection: Any, doc_id: Any, was: Document | None, want: Document | None, *,
                         fields: Sequence[str], insert: Document | None = None, replace: bool = False) -> bool:
    """Give record `doc_id` the fields of `want` (`replace`: `want` is all of it; None: remove it)
    where its `fields` still hold what `was` read, a field missing there still missing. `was` None:
    there was no record, and one is inserted (with `insert`'s fields too) unless one was made
    meanwhile. False when the record moved (nothing written)."""
    with database_errors():
        if was is None:
            if want is None:
                return True
            try:
                await collection.insert_one({**(insert or {}), **want, "_id": doc_id})
            except DuplicateKeyError:
                return False
            return True
        guard: Document = {"_id": doc_id, **{f: was.get(f, {"$exists": False}) for f in fields}}
        if want is None:
            return bool((await collection.delete_one(guard)).deleted_count)
        if replace:
            return bool((await collection.replace_one(guard, want)).matched_count)
        return bool((await collection.update_one(guard, {"$set": want})).matched_count)
