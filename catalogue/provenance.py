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

A file holds at most MAX_ANCESTORS direct ancestors however many calls link them: a link that
would pass it is refused (413 `limit_exceeded`), and a file that held more before the bound is
read as it is but given no more. A link call reads only which of its names the file holds
already, and answers with counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.directories import find_by_ids
from catalogue.lfn import check_lfn
from kernel.db import READ_SLICE, Document, bulk_write_chunked, database_errors
from kernel.errors import CairnError, Conflict, InvalidInput, LimitExceeded, NotFound

MAX_DEPTH = 50
MAX_RESULTS = 100_000
MAX_LINKS_READ = 10 * MAX_RESULTS
BATCH = 10_000  # ancestor names a reply carries at most
# Direct ancestors of a file, and names one call links: a job's inputs (wms' MAX_INPUTS_PER_JOB),
# 10 MiB of LFNs at most (1024 characters each) under MongoDB's 16 MB document.
MAX_ANCESTORS = 10_000
WRITE_ATTEMPTS = 5  # reads and guarded writes of one link call, while other calls change the file
Direction = Literal["ancestors", "descendants"]
Visible = Callable[[Iterable[str]], Awaitable[set[str]]]


@dataclass
class Linked:
    """What a link call did, per file: names added, names it held already, and refusals (a file
    the names would take past MAX_ANCESTORS, a missing file, one that kept changing)."""

    added: dict[str, int] = field(default_factory=dict)
    already_linked: dict[str, int] = field(default_factory=dict)
    refused: dict[str, CairnError] = field(default_factory=dict)


def _over(lfn: str) -> LimitExceeded:
    return LimitExceeded(f"{lfn} would hold more than {MAX_ANCESTORS:,} ancestors: a file holds at most "
                         f"{MAX_ANCESTORS:,} (a job's inputs); nothing was linked",
                         details={"lfn": lfn, "max_ancestors": MAX_ANCESTORS})


def _check_links(links: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    checked = {}
    for lfn, parents in links.items():
        check_lfn(lfn)
        for parent in parents:
            check_lfn(parent)
            if parent == lfn:
                raise InvalidInput(f"{lfn} cannot be its own ancestor")
        if parents:
            checked[lfn] = list(dict.fromkeys(parents))
    return checked


def _slices(links: Mapping[str, list[str]]) -> Iterator[dict[str, list[str]]]:
    """`links` in parts of at most READ_SLICE files and about BATCH names (one query each)."""
    part: dict[str, list[str]] = {}
    for lfn, parents in links.items():
        if part and (len(part) >= READ_SLICE or sum(map(len, part.values())) + len(parents) > BATCH):
            yield part
            part = {}
        part[lfn] = parents
    if part:
        yield part


async def _held(db: AsyncDatabase[Document], links: Mapping[str, list[str]]) -> dict[str, set[str]]:
    """Of each file's given names, those it holds already; only those are read, not its list."""
    held: dict[str, set[str]] = {}
    for part in _slices(links):
        # Index: `_id`; the names are matched on the server, one entry each.
        names = sorted({a for parents in part.values() for a in parents})
        pipeline: list[Document] = [{"$match": {"_id": {"$in": list(part)}}}, {"$project": {"ancestors": 1}},
                                    {"$unwind": "$ancestors"}, {"$match": {"ancestors": {"$in": names}}}]
        with database_errors():
            async for doc in await db[FILES].aggregate(pipeline):
                held.setdefault(doc["_id"], set()).add(doc["ancestors"])
    return held


def _room_for(count: int) -> Document:
    """A filter true while a file holds at most MAX_ANCESTORS - count ancestors: no entry at that
    position (MongoDB and FerretDB 1.24 alike; `$expr` and `$size` ranges are not in both)."""
    return {f"ancestors.{MAX_ANCESTORS - count}": {"$exists": False}}


async def _full(db: AsyncDatabase[Document], new: Mapping[str, list[str]]) -> set[str]:
    """The files of `new` that have no room for their new names."""
    by_count: dict[int, list[str]] = {}
    for lfn, names in new.items():
        by_count.setdefault(len(names), []).append(lfn)
    full = {lfn for count, lfns in by_count.items() if count > MAX_ANCESTORS for lfn in lfns}
    clauses = [{"_id": {"$in": lfns}, f"ancestors.{MAX_ANCESTORS - count}": {"$exists": True}}
               for count, lfns in by_count.items() if count <= MAX_ANCESTORS]
    if clauses:
        with database_errors():  # Index: `_id`.
            full.update(d["_id"] for d in await db[FILES].find({"$or": clauses}, {"_id": 1}).to_list())
    return full


async def add_ancestor_links(db: AsyncDatabase[Document], links: Mapping[str, Sequence[str]]) -> Linked:
    """Add ancestors to existing files (`{lfn: [ancestor, ...]}`, set semantics). Ancestors need
    not exist (inputs may have been removed). A file ends with at most MAX_ANCESTORS: each
    write is guarded by its room and by the names it was read to hold, so concurrent calls
    cannot pass the bound together; a file whose guard missed is read again."""
    pending, out = _check_links(links), Linked()
    for attempt in range(WRITE_ATTEMPTS):
        held = await _held(db, pending)
        new = {lfn: [a for a in given if a not in held.get(lfn, set())] for lfn, given in pending.items()}
        for lfn, given in pending.items():
            if new[lfn] or attempt == 0:  # a later read finding them all held found this call's write
                out.added[lfn], out.already_linked[lfn] = len(new[lfn]), len(given) - len(new[lfn])
        new = {lfn: names for lfn, names in new.items() if names}
        if attempt:  # the last write missed some: say why, or try again
            full = await _full(db, new)
            missing = set(new) - full - set(await find_by_ids(db[FILES], list(new), {"_id": 1}))
            out.refused.update({lfn: _over(lfn) for lfn in full})
            out.refused.update({lfn: NotFound(f"file {lfn} does not exist") for lfn in missing})
            new = {lfn: names for lfn, names in new.items() if lfn not in full | missing}
        if not new:
            return _settled(out)
        updates = [UpdateOne({"_id": lfn, **_room_for(len(names)),
                              **({"ancestors": {"$all": sorted(held[lfn])}} if held.get(lfn) else {})},
                             {"$addToSet": {"ancestors": {"$each": names}}}) for lfn, names in new.items()]
        result = await bulk_write_chunked(db[FILES], updates)
        if result.matched_count == len(updates):
            return _settled(out)
        pending = {lfn: pending[lfn] for lfn in new}
    out.refused.update({lfn: Conflict(f"the ancestors of {lfn} kept changing; retry") for lfn in pending})
    return _settled(out)


def _settled(out: Linked) -> Linked:
    for lfn in out.refused:
        out.added.pop(lfn, None)
        out.already_linked.pop(lfn, None)
    return out


async def record_production(db: AsyncDatabase[Document], lfns: Sequence[str], ancestors: Sequence[str],
                            produced_by: Document) -> None:
    """Set what made these files: their ancestors (replacing any; a job's inputs, as many as
    MAX_ANCESTORS) and the job attempt that produced them (`{job, attempt}`), in one write."""
    with database_errors():
        await db[FILES].update_many({"_id": {"$in": list(lfns)}}, {"$set": {
            "ancestors": list(ancestors), "produced_by": produced_by}})


async def link_ancestors(db: AsyncDatabase[Document], lfn: str, ancestors: Sequence[str]) -> dict[str, Any]:
    """Record that `lfn` was made from `ancestors` (the file must exist): `{lfn, added,
    already_linked}`, counts only, whatever the file holds. Past MAX_ANCESTORS: 413, nothing written."""
    check_lfn(lfn)
    found = await find_by_ids(db[FILES], [lfn], {"_id": 1})
    if lfn not in found:
        raise NotFound(f"file {lfn} does not exist")
    linked = await add_ancestor_links(db, {lfn: ancestors})
    if lfn in linked.refused:
        raise linked.refused[lfn]
    return {"lfn": lfn, "added": linked.added.get(lfn, 0), "already_linked": linked.already_linked.get(lfn, 0)}


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
