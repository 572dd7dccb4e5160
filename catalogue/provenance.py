"""Provenance: which files a file was made from (its ancestors) and which were made from it.

A file stores the LFNs it was made from in a plain `ancestors` list (the job layer writes its
outputs' inputs there; `register_files` takes them too). Descendants are found through the
multikey index `files_by_ancestors`. Walking either way costs one `$in` query per level, to a
depth the caller chooses (at most MAX_DEPTH); a file reached twice is reported at its nearest
depth, so cycles in bad data end the walk instead of looping.

A walk lists at most MAX_RESULTS files; one that would list more is refused (400), whichever
the direction. Going up, a level's read stops at what the bound still allows plus one name (a
file's `ancestors` are free names, 10,000 more a link call, and were read whole whatever their
number); names met again (shared inputs) are read but not listed, and at most MAX_LINKS_READ
names are read in a walk. Going down, each name read is a catalogued file's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.directories import find_by_ids
from catalogue.lfn import check_lfn
from kernel.db import READ_SLICE, Document, bulk_write_chunked, database_errors
from kernel.errors import InvalidInput, NotFound

MAX_DEPTH = 50
MAX_RESULTS = 100_000
MAX_LINKS_READ = 10 * MAX_RESULTS
BATCH = 10_000  # ancestor names a reply carries at most
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


async def _seen_by(visible: Visible | None, lfns: Iterable[str]) -> set[str]:
    lfns = set(lfns)
    if visible is None or not lfns:
        return lfns
    return lfns & await visible(lfns)


def _cut(bound: int, depth: int) -> InvalidInput:
    return InvalidInput(f"more than {bound} related files within depth {depth}; ask for a smaller depth",
                        details={"bound": bound, "depth": depth})


async def _parents(db: AsyncDatabase[Document], files: Sequence[str], seen: set[str], room: int,
                   links_left: int) -> tuple[list[str], int]:
    """The ancestors the `files` list that are not in `seen`, and the links left to read: all of
    them, or `room + 1` of them where there are more (the walk is cut: `links_left` < 0 too).
    The names stream, one per reply entry, so no file's whole list is read."""
    new: set[str] = set()
    for start in range(0, len(files), READ_SLICE):
        # Index: `_id`. $unwind then $limit streams (a $group would dedupe on the server, but
        # FerretDB 1.24's is quadratic, and $slice projections it does not know); `$unset` as
        # `$project: {_id: 0}` breaks FerretDB 1.24's connection.
        part = list(files[start:start + READ_SLICE])
        pipeline: list[Document] = [{"$match": {"_id": {"$in": part}}}, {"$project": {"ancestors": 1}},
                                    {"$unwind": "$ancestors"}, {"$unset": "_id"}, {"$limit": links_left + 1}]
        with database_errors():
            cursor = await db[FILES].aggregate(pipeline, batchSize=max(1, min(room + 1, BATCH)))
            try:
                async for doc in cursor:
                    links_left -= 1
                    if doc["ancestors"] not in seen:
                        new.add(doc["ancestors"])
                    if len(new) > room or links_left < 0:
                        return sorted(new), links_left
            finally:
                await cursor.close()
    return sorted(new), links_left


async def _children(db: AsyncDatabase[Document], files: Sequence[str], seen: set[str]) -> list[str]:
    """The files naming one of `files` as an ancestor that are not in `seen`. Each is a catalogued
    file, registered by someone, not a free name, and the walk reads its name only."""
    with database_errors():
        # Index: files_by_ancestors (multikey).
        docs = await db[FILES].find({"ancestors": {"$in": list(files)}}, {"_id": 1}).to_list()
    return sorted({d["_id"] for d in docs} - seen)


async def walk(db: AsyncDatabase[Document], lfn: str, direction: Direction, depth: int, *,
               visible: Visible | None = None, bound: int = MAX_RESULTS) -> list[dict[str, Any]]:
    """Files related to `lfn` up to `depth` levels away: `[{lfn, depth, exists}]`, nearest
    first. Ancestors that are no longer catalogued are listed with `exists: false`. More than
    `bound` of them: 400 (details: the bound and the depth where it was passed).

    `visible` (the caller's view, `catalogue.authorization.visible_files`) hides the files it
    leaves out: an ancestor is then listed as not catalogued, a descendant not at all, and the
    walk does not go on through either."""
    check_lfn(lfn)
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidInput(f"depth must be between 1 and {MAX_DEPTH}")
    if lfn not in await find_by_ids(db[FILES], [lfn], {"_id": 1}):
        raise NotFound(f"file {lfn} does not exist")
    seen, frontier, links_left = {lfn}, [lfn], MAX_LINKS_READ
    out: list[dict[str, Any]] = []
    for level in range(1, depth + 1):
        room = bound - len(out)
        found: list[dict[str, Any]]
        if direction == "ancestors":
            names, links_left = await _parents(db, frontier, seen, room, links_left)
            if len(names) > room or links_left < 0:
                raise _cut(bound, level)
            shown = await _seen_by(visible, await find_by_ids(db[FILES], names, {"_id": 1}))
            found = [{"lfn": n, "depth": level, "exists": n in shown} for n in names]
        else:
            shown = await _seen_by(visible, await _children(db, frontier, seen))
            if len(shown) > room:  # counted as the caller sees them: hidden files are not told
                raise _cut(bound, level)
            found = [{"lfn": n, "depth": level, "exists": True} for n in sorted(shown)]
        seen.update(f["lfn"] for f in found)
        out.extend(found)
        frontier = sorted(shown)
        if not frontier:
            break
    return out
