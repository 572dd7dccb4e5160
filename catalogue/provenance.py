"""Provenance: which files a file was made from (its ancestors) and which were made from it.

A file stores the LFNs it was made from in a plain `ancestors` list (the job layer writes its
outputs' inputs there; `register_files` takes them too). Descendants are found through the
multikey index `files_by_ancestors`. Walking either way costs one `$in` query per level, to a
depth the caller chooses (at most MAX_DEPTH); a file reached twice is reported at its nearest
depth, so cycles in bad data end the walk instead of looping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.directories import find_by_ids
from catalogue.lfn import check_lfn
from kernel.db import Document, bulk_write_chunked, database_errors
from kernel.errors import InvalidInput, NotFound

MAX_DEPTH = 50
MAX_RESULTS = 100_000
Direction = Literal["ancestors", "descendants"]
Visible = Callable[[Iterable[str]], Awaitable[set[str]]]


async def add_ancestor_links(db: AsyncDatabase[Document], links: Mapping[str, Sequence[str]]) -> int:
    """Add ancestors to existing files (`{lfn: [ancestor, ...]}`, set semantics, one bulk write);
    returns how many files changed. Ancestors need not exist (inputs may have been removed)."""
    updates = []
    for lfn, parents in links.items():
        check_lfn(lfn)
        for parent in parents:
            check_lfn(parent)
            if parent == lfn:
                raise InvalidInput(f"{lfn} cannot be its own ancestor")
        if parents:
            updates.append(UpdateOne({"_id": lfn}, {"$addToSet": {"ancestors": {"$each": list(parents)}}}))
    if not updates:
        return 0
    with database_errors():
        result = await bulk_write_chunked(db[FILES], updates)
    return result.modified_count


async def record_production(db: AsyncDatabase[Document], lfns: Sequence[str], ancestors: Sequence[str],
                            produced_by: Document) -> None:
    """Set what made these files: their ancestors (replacing any) and the job attempt that
    produced them (`{job, attempt}`), in one write."""
    with database_errors():
        await db[FILES].update_many({"_id": {"$in": list(lfns)}}, {"$set": {
            "ancestors": list(ancestors), "produced_by": produced_by}})


async def link_ancestors(db: AsyncDatabase[Document], lfn: str, ancestors: Sequence[str]) -> dict[str, Any]:
    """Record that `lfn` was made from `ancestors` (the file must exist)."""
    check_lfn(lfn)
    found = await find_by_ids(db[FILES], [lfn], {"_id": 1})
    if lfn not in found:
        raise NotFound(f"file {lfn} does not exist")
    await add_ancestor_links(db, {lfn: list(dict.fromkeys(ancestors))})
    stored = await find_by_ids(db[FILES], [lfn], {"ancestors": 1})
    return {"lfn": lfn, "ancestors": stored[lfn].get("ancestors", [])}


async def _seen_by(visible: Visible | None, docs: dict[str, Document]) -> dict[str, Document]:
    if visible is None or not docs:
        return docs
    shown = await visible(docs)
    return {k: v for k, v in docs.items() if k in shown}


async def walk(db: AsyncDatabase[Document], lfn: str, direction: Direction, depth: int, *,
               visible: Visible | None = None) -> list[dict[str, Any]]:
    """Files related to `lfn` up to `depth` levels away: `[{lfn, depth, exists}]`, nearest
    first. Ancestors that are no longer catalogued are listed with `exists: false`.

    `visible` (the caller's view, `catalogue.authorization.visible_files`) hides the files it
    leaves out: an ancestor is then listed as not catalogued, a descendant not at all, and the
    walk does not go on through either."""
    check_lfn(lfn)
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidInput(f"depth must be between 1 and {MAX_DEPTH}")
    start = await find_by_ids(db[FILES], [lfn], {"ancestors": 1})
    if lfn not in start:
        raise NotFound(f"file {lfn} does not exist")
    seen = {lfn}
    out: list[dict[str, Any]] = []
    level_docs: dict[str, Document] = start
    for level in range(1, depth + 1):
        if direction == "ancestors":
            names = sorted({a for d in level_docs.values() for a in d.get("ancestors", [])} - seen)
            level_docs = await find_by_ids(db[FILES], names, {"ancestors": 1}) if names else {}
            level_docs = await _seen_by(visible, level_docs)
            found = [{"lfn": n, "depth": level, "exists": n in level_docs} for n in names]
        else:
            with database_errors():
                # Index: files_by_ancestors (multikey).
                # Only the names: a descendant's own `ancestors` (perhaps thousands) are not needed.
                cursor = db[FILES].find({"ancestors": {"$in": sorted(level_docs)}}, {"_id": 1})
                docs = await cursor.to_list()
            level_docs = await _seen_by(visible, {d["_id"]: d for d in docs if d["_id"] not in seen})
            found = [{"lfn": n, "depth": level, "exists": True} for n in sorted(level_docs)]
        seen.update(f["lfn"] for f in found)
        out.extend(found)
        if len(out) > MAX_RESULTS:
            raise InvalidInput(f"more than {MAX_RESULTS} related files; ask for a smaller depth")
        if not level_docs:
            break
    return out
