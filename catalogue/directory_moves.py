"""A directory move excludes the moves and removals of the files below it, and they exclude it.

A directory move copies its tree's records to the new place and deletes the originals by `_id`;
a file moved or removed on its own meanwhile could be copied by both, or taken from under the
other. Each side sets its mark first and then looks for the other's (two single-document writes
and two reads on one database: at least one of them sees the other): a directory move marks its
directory record (MOVING, lease MOVE_LEASE), then waits up to HELD_WAIT for the live marks of
files below it (`removing`: a file move or removal under way, `catalogue.file_move`,
`catalogue.file_removal`) to go, and answers 409 if some stay; a file move or removal marks its
file records, then gives up those below a directory a live move holds (409 for them); a
registration refuses files below a moving directory it read, and gives up those it wrote if a
move's mark appeared meanwhile, or a directory above them went, wherever the move put them
(`give_up_registered`; a directory it made on the way may be left at the old place in that
narrow case). A dataset's attach names files by LFN the same way: a move looks for dataset
rows after its mark, an attach for marks (and the files) after its rows (`leaving`); and so
does a writer's `copying` replica: a move looks for such replicas after its mark, a push (or a
replica set `copying` again) for marks, or the file carried away, after its write
(`carried_or_moving`; `catalogue.replica_pushes` takes the replica back).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import directory_move_plan as plan
from catalogue.children import subtree_range
from catalogue.collection_names import FILES
from catalogue.directories import DIRECTORIES
from catalogue.lfn import ROOT, ancestors
from catalogue.usage import MOVING, REGISTERED_IN, REMOVAL_LEASE, REMOVING, WITHDRAWN
from kernel.db import Document, database_errors, find_by_values, increment, pages_by_id, read_by_ids
from kernel.marks import by_ids

log = logging.getLogger(__name__)
MOVE_LEASE = dt.timedelta(minutes=10)  # a directory move's mark (a big tree takes a while to move)
BELOW_A_MOVE = "a directory above the file is being moved; try again"  # why such a file is refused
HELD_WAIT = 2.0  # seconds a directory move waits for the file moves and removals under way below it
PASS_WAIT = 10.0  # seconds a registration giving records up waits for a move's batch under way to pass them


def _live(mark: Document | None, lease: dt.timedelta) -> bool:
    at = (mark or {}).get("at")
    return at is not None and bool(at > dt.datetime.now(dt.UTC) - lease)


def below_moves(lfns: Iterable[str], directories: Iterable[Document]) -> set[str]:
    """Of lfns, those below one of `directories` (their ancestors' records, as read) that a live
    move holds."""
    held = {doc["_id"] for doc in directories if plan.held(doc.get(MOVING), MOVE_LEASE)}
    return {lfn for lfn in lfns if held.intersection(ancestors(lfn))} if held else set()


async def moving_above(db: AsyncDatabase[Document], lfns: Iterable[str]) -> set[str]:
    """Of lfns, those below a directory that a live move holds (one read of their ancestors)."""
    lfns = list(lfns)
    above = sorted({d for lfn in lfns for d in ancestors(lfn)})
    marked = [doc async for doc in read_by_ids(db[DIRECTORIES], above, {MOVING: 1}, flt={MOVING: {"$exists": True}})]
    return below_moves(lfns, marked)


async def _looked_above(db: AsyncDatabase[Document], lfns: list[str], fields: Iterable[str] = ()
                        ) -> tuple[set[str], list[str], dict[str, Document]]:
    """Of lfns, those below a directory a live move holds, and those with a directory above them
    missing; and their ancestors as read, with `fields` (one read of their ancestors)."""
    above = sorted({d for lfn in lfns for d in ancestors(lfn) if d != ROOT})
    found = [doc async for doc in read_by_ids(db[DIRECTORIES], above, {MOVING: 1, **dict.fromkeys(fields, 1)})]
    present = {doc["_id"]: doc for doc in found}
    orphaned = [lfn for lfn in lfns if any(d not in present for d in ancestors(lfn) if d != ROOT)]
    return below_moves(lfns, found), orphaned, present


async def moving_or_gone_above(db: AsyncDatabase[Document], lfns: Iterable[str]) -> set[str]:
    """Of the LFNs of records just written with their directories, those below a directory a live
    move holds or with a directory above them gone (one read of their ancestors): what a
    registration must give up, read after its insert (a directory move takes the directories
    below it away first and its own record, with the mark, last)."""
    return (await looked_above(db, lfns))[0]


async def looked_above(db: AsyncDatabase[Document], lfns: Iterable[str], fields: Iterable[str] = ()
                       ) -> tuple[set[str], dict[str, Document]]:
    """`moving_or_gone_above`, and the ancestors as that read found them, with `fields` (a
    registration checks them again: `catalogue.files._outside_moves`)."""
    moving, orphaned, found = await _looked_above(db, list(lfns), fields)
    return moving | set(orphaned), found


async def carried_or_moving(db: AsyncDatabase[Document], lfns: Iterable[str]) -> set[str]:
    """Of the LFNs of existing files, those below a directory a live move holds, or no longer at
    their LFN with a directory above them gone (moved away; a file registered without its
    directories may lack them and still be there): read after a write that names a file by its
    LFN, what a directory move may have carried away or be about to. One read of their
    ancestors, and one of the files whose directories are missing."""
    moving, orphaned, _ = await _looked_above(db, list(lfns))
    if not orphaned:
        return moving
    there = {doc["_id"] async for doc in read_by_ids(db[FILES], orphaned, {"_id": 1})}
    return moving | {lfn for lfn in orphaned if lfn not in there}


async def leaving(db: AsyncDatabase[Document], lfns: Iterable[str]) -> set[str]:
    """Of lfns, the files gone, held by a live move or removal of their own, or below a directory
    a live move holds: what a call that names files by LFN (a dataset's attach) must not keep,
    read after its own write (the move marks first and looks for that write after)."""
    lfns = list(lfns)
    if not lfns:
        return set()
    present = {doc["_id"]: doc async for doc in read_by_ids(db[FILES], lfns, {REMOVING: 1})}
    held = {lfn for lfn in lfns if lfn not in present or _live(present[lfn].get(REMOVING), REMOVAL_LEASE)}
    return held | await moving_above(db, [lfn for lfn in lfns if lfn not in held])


async def moves_around(db: AsyncDatabase[Document], source: str, destination: str, token: str) -> bool:
    """Whether another move holds a directory above `source` or `destination`, or below `source`
    (read after this move's mark: a move of a directory above or below it sees that mark)."""
    return bool(await moving_above(db, [source, destination])) or await moves_below(db, source, token)


async def moves_below(db: AsyncDatabase[Document], path: str, token: str | None = None) -> bool:
    """Whether a move (other than the one of `token`) holds a directory below `path` (one read
    of the subtree's directories by `_id` range)."""
    low, high = subtree_range(path)
    async for doc in pages_by_id(db[DIRECTORIES], {MOVING: {"$exists": True}}, {MOVING: 1}, after=low, before=high):
        if doc[MOVING].get("token") != token and plan.held(doc[MOVING], MOVE_LEASE):
            return True
    return False


async def files_held_below(db: AsyncDatabase[Document], path: str) -> list[str]:
    """The files below `path` that a live file move or removal holds, after waiting up to
    HELD_WAIT for them to go (one read of the subtree's records by `_id` range each look)."""
    low, high = subtree_range(path)
    deadline = time.monotonic() + HELD_WAIT
    while True:
        held = [doc["_id"] async for doc in pages_by_id(db[FILES], {REMOVING: {"$exists": True}}, {REMOVING: 1},
                                                        after=low, before=high)
                if _live(doc.get(REMOVING), REMOVAL_LEASE)]
        if not held or time.monotonic() >= deadline:
            return held
        await asyncio.sleep(0.05)


async def give_up_registered(db: AsyncDatabase[Document], call: str, records: Mapping[str, str]) -> None:
    """Delete the records a register call (`call`, its REGISTERED_IN token) just wrote and gives up
    below a directory move (`{lfn: GUID}`, uncounted), wherever the move has put them.

    A move may have read a record before the call looked: copied and dropped it already (it is
    at its new LFN), or be copying it. So the call first marks its records WITHDRAWN (a change
    of their version): a move copies no WITHDRAWN record, and one that copied a record before the
    mark takes the copy back (the original's version changed) and leaves it. Then it waits for
    the move's batch under way to pass (`_moves_passed`), and deletes its records at their LFN,
    and those the move had carried away, by their GUID."""
    lfns = sorted(records)
    marked = 0
    with database_errors():
        for flt in by_ids(lfns, {REGISTERED_IN: call}):
            marked += (await db[FILES].update_many(flt, {"$set": {WITHDRAWN: True}, **increment({"version": 1})})
                       ).modified_count
    await _moves_passed(db, lfns)
    if marked < len(lfns):  # some carried away before the mark (or removed meanwhile): where are they now
        carried = await find_by_values(db[FILES], "guid", records.values(), {"_id": 1})
        lfns = sorted({*lfns, *(doc["_id"] for doc in carried)})
    with database_errors():
        for flt in by_ids(lfns, {REGISTERED_IN: call}):
            await db[FILES].delete_many(flt)


async def _moves_passed(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    """Wait (up to PASS_WAIT) until every live directory move above lfns has renewed its mark
    twice (after each batch it relocates: the batch under way, and one more read ahead) or ended,
    so that none still holds a copy of a record read before now."""
    above = sorted({d for lfn in lfns for d in ancestors(lfn) if d != ROOT})

    async def marks() -> dict[str, tuple[str, dt.datetime]]:
        return {doc["_id"]: (doc[MOVING].get("token"), doc[MOVING].get("at"))
                async for doc in read_by_ids(db[DIRECTORIES], above, {MOVING: 1}, flt={MOVING: {"$exists": True}})
                if plan.held(doc.get(MOVING), MOVE_LEASE)}

    seen = {path: [mark] for path, mark in (await marks()).items()}
    deadline = time.monotonic() + PASS_WAIT
    while seen and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now = await marks()
        for path, history in list(seen.items()):
            mark = now.get(path)
            if mark is None or mark[0] != history[0][0]:  # ended (or another move, which read after the mark)
                del seen[path]
            elif mark != history[-1]:
                history.append(mark)
                if len(history) > 2:
                    del seen[path]
    if seen:
        log.warning("a directory move above %s did not pass the records a registration gave up within %.0f s; "
                    "deleting them now", min(seen), PASS_WAIT)
