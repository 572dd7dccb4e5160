"""Directory moves that a server killed (or that failed) half-way, finished by the transfer
workers' sweep (`settle_stale`), so that a tree is never left split between two places, its
counts moved once (`catalogue.directory_move_plan`).

Before, a directory move cut short left part of its tree at the new place and part at the old,
for good: the destination existed, so every `cairn mv` again answered "exists already", and the
usage counters of both places' ancestors still counted the whole tree at the old place.

The sweep takes a move's claim left PENDING for longer than its wait and reads the source's
record. The source's mark gone (or not this call's): the call got past deleting the source, only
its count (d) is left, and settled. The mark there and renewed within the lease (MOVE_LEASE): the
call is alive, and left alone. Not renewed for the lease: the sweep takes both marks over under a
token of its own (a call that was only slow finds its marks gone at its next batch and stops:
`directory_move_plan.renew`), then takes back a move that never got its destination PLACED, and
finishes one that did: its files' copies the dead call left beside their originals taken back
(and those whose originals went given their GUIDs, with the move's events), the rest of the
tree moved as the call moves it, then steps (a) to (d).

What is left: a call killed between placing a batch's copies and appending their events leaves
the feed without them (the sweep tells only the copies it places itself).
"""

from __future__ import annotations

import datetime as dt
import logging

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, guid_holds, usage_claims
from catalogue import directory_move_plan as plan
from catalogue.children import subtree_range
from catalogue.collection_names import FILES
from catalogue.directories import DIRECTORIES
from catalogue.directory_moves import MOVE_LEASE
from catalogue.moves import finish_tree
from catalogue.usage import COPY_CALL, COUNTING, KIND, MOVING, PENDING, USAGE_CLAIMS
from catalogue.vos import registry
from kernel.db import Document, database_errors, pages_by_id, read_by_ids
from kernel.marks import Mark, within

log = logging.getLogger("cairn.usage")


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = usage_claims.STALE_S,
                       lease: dt.timedelta = MOVE_LEASE) -> int:
    """Finish or take back the directory moves whose calls died (their marks not renewed for
    `lease`), as the module says; how many."""
    return sum([await _repair(db, claim, lease) for claim in await usage_claims.stale(db, older_than_s, plan.KIND)])


async def under_way(db: AsyncDatabase[Document]) -> list[str]:
    """The sources of the directory moves under way (claimed and not settled; read as the
    rebuild reads PENDING claims, by the index usage_claims_by_pending)."""
    with database_errors():
        claims = await db[USAGE_CLAIMS].find({PENDING: {"$exists": True}, KIND: plan.KIND}, {COUNTING: 1}
                                             ).to_list()
    return sorted(str((claim.get(COUNTING) or {}).get(plan.SOURCE)) for claim in claims)


async def _repair(db: AsyncDatabase[Document], claim: Document, lease: dt.timedelta) -> bool:
    call, counting = str(claim["_id"]), claim.get(COUNTING) or {}
    source, destination = str(counting[plan.SOURCE]), str(counting[plan.DESTINATION])
    with database_errors():
        current = await db[DIRECTORIES].find_one({"_id": source}, {MOVING: 1})
    found = (current or {}).get(MOVING) or {}
    if found.get(plan.CALL) != call:  # past deleting its source (or it never named the call): only (d) is left
        with database_errors():
            await db[DIRECTORIES].update_one({"_id": destination, f"{MOVING}.{plan.CALL}": call},
                                             {"$unset": {MOVING: ""}})
        await plan.settle(db, call)
        return True
    if within(found.get("at"), lease):
        return False  # alive, or stalled for less than its lease
    mark = Mark(MOVING, lease)
    with database_errors():
        taken = await db[DIRECTORIES].update_one({"_id": source, f"{MOVING}.token": found.get("token")},
                                                 {"$set": {MOVING: plan.source_mark(mark, call, destination)}})
        if not taken.modified_count:
            return False  # another sweep took it
        await db[DIRECTORIES].update_one({"_id": destination, f"{MOVING}.{plan.CALL}": call},
                                         {"$set": {MOVING: plan.destination_mark(mark, call, source)}})
    if not counting.get(plan.PLACED):
        await plan.give_up(db, mark, call, source, destination)
        log.warning("took back the move of %s to %s, which a stopped process had left before it began", source,
                    destination)
        return True
    placed = await _placed_directories(db, destination)
    await _settle_copies(db, call, source, destination)
    await finish_tree(db, mark, call, source, destination, placed, await registry(db))
    log.warning("finished the move of %s to %s, which a stopped process had left half done", source, destination)
    return True


async def _placed_directories(db: AsyncDatabase[Document], destination: str) -> dict[str, Document]:
    """The destination's record and those below it, as the call keeps what it placed (inherited
    metadata of what is still to move is derived from them)."""
    low, high = subtree_range(destination)
    with database_errors():
        top = await db[DIRECTORIES].find_one({"_id": destination})
    placed = {destination: top} if top is not None else {}
    async for doc in pages_by_id(db[DIRECTORIES], {}, after=low, before=high):
        placed[doc["_id"]] = doc
    return placed


async def _settle_copies(db: AsyncDatabase[Document], call: str, source: str, destination: str) -> None:
    """The file copies the dead call left unplaced (still carrying its call): taken back where the
    original is still at its place (the sweep copies it again), else given their GUIDs and told."""
    low, high = subtree_range(destination)
    cut = len(destination)
    copies = [doc async for doc in pages_by_id(db[FILES], {COPY_CALL: call}, {"moving_guid": 1},
                                               after=low, before=high)]
    if not copies:
        return
    originals = {source + doc["_id"][cut:]: doc for doc in copies}
    there = {doc["_id"] async for doc in read_by_ids(db[FILES], originals, {"_id": 1})}
    with database_errors():
        await db[FILES].delete_many({"_id": {"$in": [originals[original]["_id"] for original in there]},
                                     COPY_CALL: call})
    gone = [(original, doc) for original, doc in originals.items() if original not in there]
    await guid_holds.restore(db[FILES], [(doc["_id"], doc["moving_guid"]) for _, doc in gone if doc.get("moving_guid")])
    await guid_holds.release(db, [doc.get("moving_guid") for doc in copies])  # the dead call's holds
    with database_errors():
        await db[FILES].update_many({"_id": {"$in": [doc["_id"] for _, doc in gone]}, COPY_CALL: call},
                                    {"$unset": {COPY_CALL: ""}})
    await change_feed.append(db, [event for original, doc in gone for event in (
        change_feed.event("file_removed", original, moved_to=doc["_id"]),
        change_feed.event("file_registered", doc["_id"], moved_from=original))])
