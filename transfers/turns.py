"""Turns in the request queue, so that one requester's many requests do not make everyone else's
wait behind them (a user queueing 100k copies took the daemons for hours from every other user of
every VO: claims went by priority, then by age).

Within a priority, requests are claimed by `turn`: each requester has a clock per kind of
request, and a submission of N requests takes the requester's next N turns, starting no earlier
than that kind's service frontier (the highest turn of that kind claimed so far: the reaper's
quick deletions must not push the transfers' frontier past a transfer backlog). A newcomer's
request so lands just behind what is being served, ahead of a heavy requester's backlog; two
heavy requesters alternate (stride scheduling with equal shares, as FTS3's per-VO shares without
weights). One requester's own requests keep their submission order. The cost is three small round
trips per submission and one per claimed batch, none per file.

Turns are integers of 16 digits (FIRST_TURN on): the claim index's order is read as text on
Cairn's FerretDB build (`kernel.db.INDEX_ORDER`), where integers must have one number of digits.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from kernel.claims import now
from kernel.db import Document, database_errors

TURNS = "request_turns"
SERVED = "@served"  # the service frontiers' documents: "@served|<kind>" (requesters are "kind:name")
GIVEN = "@given"  # there: every request queued before turns existed has one (`request_claims.give_turns`)
FIRST_TURN = 10**15


async def take_turns(db: AsyncDatabase[Document], kind: str, requester: str, count: int) -> int:
    """The first of `count` consecutive turns for requester's new requests of `kind`: after its
    earlier ones, and not before the frontier. Two submissions of one requester at once get
    disjoint turns (the `$inc` is atomic)."""
    clock = f"{kind}|{requester}"
    with database_errors():
        served = await db[TURNS].find_one({"_id": f"{SERVED}|{kind}"})
        frontier = int(served["turn"]) if served else FIRST_TURN
        await db[TURNS].update_one({"_id": clock}, {"$max": {"turn": frontier}}, upsert=True)
        before = await db[TURNS].find_one_and_update({"_id": clock}, {"$inc": {"turn": count}},
                                                     return_document=ReturnDocument.BEFORE)
    return int(before["turn"]) if before else frontier


async def mark_served(db: AsyncDatabase[Document], claimed: Sequence[Document]) -> None:
    """Move each kind's frontier to the highest turn among its requests just claimed."""
    highest: dict[str, int] = {}
    for doc in claimed:
        if isinstance(doc.get("turn"), int):
            highest[doc["kind"]] = max(highest.get(doc["kind"], 0), doc["turn"])
    with database_errors():
        for kind, turn in highest.items():
            await db[TURNS].update_one({"_id": f"{SERVED}|{kind}"}, {"$max": {"turn": turn}}, upsert=True)


async def turns_given(db: AsyncDatabase[Document]) -> bool:
    with database_errors():
        return await db[TURNS].find_one({"_id": GIVEN}) is not None


async def note_turns_given(db: AsyncDatabase[Document]) -> None:
    with database_errors():
        await db[TURNS].update_one({"_id": GIVEN}, {"$set": {"at": now()}}, upsert=True)
