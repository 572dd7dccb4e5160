"""A directory move's plan: its marks, its claim and its counts, which a server killed half-way
leaves for the transfer workers' sweep to finish (`catalogue.directory_move_repair`).

A directory move (`catalogue.moves`) marks its source directory, claims its call in
`usage_claims` (KIND "directory_move", COUNTING: source and destination) noted on the usage
records of both places' ancestors, inserts the destination's record under the same mark, notes
PLACED once the destination stands (from then on the move is finished, never taken back), moves
the tree's records batch by batch, and then, in this order:
(a) fixes the tree's totals (`files`, `bytes` of the source's usage record) on the claim, once;
(b) re-keys the tree's usage records under the destination (idempotent while the source's
    records are there: the marks keep every other writer out of both trees);
(c) deletes the source's record and takes the mark off the destination;
(d) settles the claim: the totals leave the source's ancestors and reach the destination's, each
    noted record once (`catalogue.usage_claims.settle`).
Each mark names the call it works for (CALL) and where the tree goes to or comes from: such a
mark holds for as long as it stands (`held`), not only for its lease, so that nothing is made,
moved or removed in either tree between a dead call and the sweep that finishes its move; only
that sweep takes it over, once it has not been renewed for the lease (`catalogue.directory_moves`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage_claims
from catalogue.directories import DIRECTORIES
from catalogue.usage import (
    COUNTING,
    DIRECTORY_MOVE,
    KEYS,
    MOVING,
    PENDING,
    USAGE,
    USAGE_CLAIMS,
    Usage,
    directory_key,
)
from kernel.db import Document, bulk_write_chunked, database_errors
from kernel.errors import Conflict, ServiceUnavailable
from kernel.marks import Mark, within

KIND = DIRECTORY_MOVE
CALL, TO, FROM = "call", "to", "from"  # a directory move's mark: the claim it works for, where the tree goes or was
SOURCE, DESTINATION, PLACED, FILES, BYTES = "source", "destination", "placed", "files", "bytes"  # its COUNTING


def held(mark: Mapping[str, Any] | None, lease: dt.timedelta) -> bool:
    """Whether a directory's MOVING mark (as read) holds it: a planned move's for as long as it
    stands, another's within its lease."""
    return mark is not None and (CALL in mark or within(mark.get("at"), lease))


def free(mark: Mark) -> Document:
    """Directories this move may mark: unmarked, or marked by a call of no plan past its lease."""
    return {"$or": [{MOVING: {"$exists": False}},
                    {f"{MOVING}.at": {"$lt": mark.at - mark.lease}, f"{MOVING}.{CALL}": {"$exists": False}}]}


def source_mark(mark: Mark, call: str, destination: str) -> Document:
    return {**mark.value(), CALL: call, TO: destination}


def destination_mark(mark: Mark, call: str, source: str) -> Document:
    return {**mark.value(), CALL: call, FROM: source}


def _deltas(source: str, destination: str, files: int, size: int) -> dict[str, dict[str, int]]:
    """What the tree's totals change on the ancestors of both places (none of their common ones)."""
    usage = Usage()
    usage.subtree(source, files, size, -1)
    usage.subtree(destination, files, size, +1)
    return usage.totals()


async def intend(db: AsyncDatabase[Document], call: str, source: str, destination: str) -> None:
    """Claim the move before its destination's record goes in, noted on both places' ancestors."""
    keys = sorted(_deltas(source, destination, 1, 1))
    await usage_claims.intend(db, call, keys, kind=KIND, counting={SOURCE: source, DESTINATION: destination})


async def name_call(db: AsyncDatabase[Document], mark: Mark, call: str, source: str, destination: str) -> None:
    """Once claimed: the source's mark names the call and where the tree goes (409: the mark was lost)."""
    with database_errors():
        named = await db[DIRECTORIES].update_one({"_id": source, **mark.mine()},
                                                 {"$set": {f"{MOVING}.{CALL}": call, f"{MOVING}.{TO}": destination}})
    if not named.matched_count:
        raise Conflict(f"{source} was moved meanwhile; nothing moved")


async def placed(db: AsyncDatabase[Document], call: str) -> bool:
    """The destination stands and the move goes on: from now a sweep finishes it, never takes it
    back. False when the claim was settled meanwhile (a sweep took the call, stalled, for dead)."""
    with database_errors():
        noted = await db[USAGE_CLAIMS].update_one({"_id": call, PENDING: {"$exists": True}},
                                                  {"$set": {f"{COUNTING}.{PLACED}": True}})
    return bool(noted.matched_count)


async def renew(db: AsyncDatabase[Document], mark: Mark, source: str, destination: str) -> None:
    """Between two batches: 503 for a call past half its lease since its last renewal (a sweep may
    take its marks over once the lease is out) or whose marks were taken over; else both marks
    renewed."""
    if dt.datetime.now(dt.UTC) - mark.at > mark.lease / 2:
        raise ServiceUnavailable(f"moving {source} took too long between two batches; the transfer workers "
                                 "finish the move")
    at = dt.datetime.now(dt.UTC)
    with database_errors():
        renewed = await db[DIRECTORIES].update_many({"_id": {"$in": [source, destination]}, **mark.mine()},
                                                    {"$set": {f"{MOVING}.at": at}})
    if not renewed.matched_count:
        raise ServiceUnavailable(f"the move of {source} was taken over; the transfer workers finish it")
    mark.at = at


async def move_usage(db: AsyncDatabase[Document], call: str, source: str, destination: str) -> None:
    """Steps (a) and (b): the tree's totals fixed on the claim (the first read wins), then its
    usage records re-keyed under the destination (upserted there, then deleted here)."""
    pattern = "^" + re.escape(directory_key(source)) + "(/|$)"
    with database_errors():
        records = await db[USAGE].find({"_id": {"$regex": pattern}}).to_list()
        totals = next((r for r in records if r["_id"] == directory_key(source)), {})
        await db[USAGE_CLAIMS].update_one(
            {"_id": call, f"{COUNTING}.{FILES}": {"$exists": False}},
            {"$set": {f"{COUNTING}.{FILES}": int(totals.get("files", 0)),
                      f"{COUNTING}.{BYTES}": int(totals.get("bytes", 0))}})
    cut = len(directory_key(source))
    moved = [{**r, "_id": directory_key(destination) + r["_id"][cut:]} for r in records]
    if moved:
        with database_errors():
            await bulk_write_chunked(db[USAGE], [ReplaceOne({"_id": m["_id"]}, m, upsert=True) for m in moved])
            await db[USAGE].delete_many({"_id": {"$in": [r["_id"] for r in records]}})


async def settle(db: AsyncDatabase[Document], call: str) -> None:
    """Step (d): the totals fixed in (a) leave the source's ancestors and reach the destination's."""
    with database_errors():
        claim = await db[USAGE_CLAIMS].find_one({"_id": call})
    if claim is None:
        return
    counting = claim.get(COUNTING) or {}
    deltas = _deltas(counting[SOURCE], counting[DESTINATION], int(counting.get(FILES) or 0),
                     int(counting.get(BYTES) or 0)) if FILES in counting else {}
    await usage_claims.settle(db, call, list(claim.get(KEYS) or []), deltas, keep=False)


async def give_up(db: AsyncDatabase[Document], mark: Mark, call: str, source: str, destination: str) -> None:
    """Take the move back before PLACED: the destination's record under this mark deleted, the
    source's mark taken off, and only then the claim settled counting nothing. In this order: a
    claim left PENDING with no mark of its call on the source is settled by the sweep counting
    nothing, whereas a mark naming a claim that is gone would hold its tree for good. The database
    not answering, what is left stays for the sweep (it takes the move back once the lease is out)."""
    try:
        with database_errors():
            await db[DIRECTORIES].delete_one({"_id": destination, **mark.mine()})
            await db[DIRECTORIES].update_one({"_id": source, **mark.mine()}, {"$unset": {MOVING: ""}})
            claim = await db[USAGE_CLAIMS].find_one({"_id": call}, {KEYS: 1})
        if claim is not None:
            await usage_claims.settle(db, call, list(claim.get(KEYS) or []), {}, keep=False)
    except ServiceUnavailable:
        return
