"""Turns in the request queue, so that one requester's many requests do not make everyone else's
wait behind them (a user queueing 100k copies took the daemons for hours from every other user of
every VO: claims went by priority, then by age), and so that the queue is shared by weight.

Within a priority, requests are claimed by `turn`. Each flow (a requester's requests of one kind
and activity; the activities without a share of their own are one flow) has a clock; a
submission of N requests takes the flow's next N turns, `stride` apart (`transfers.shares`: 1
for the heaviest weight, 1 / weight for lighter ones), starting no earlier than that kind's
service frontier (the highest turn of that kind claimed so far: the reaper's quick deletions
must not push the transfers' frontier past a transfer backlog). A newcomer's request so lands
just behind what is being served, ahead of a heavy requester's backlog; backlogged flows are
served in proportion to their weights (weighted fair queueing by stride scheduling, as FTS3's VO
and activity shares). One flow's requests keep their submission order. A weight is fixed when
its requests are queued: a share changed, or a VO's user arriving, weighs the submissions after
it. Cost: four small round trips per submission (three with one VO), one per claimed batch, none
per file.

Turns are integers of 16 digits (FIRST_TURN to LAST_TURN): the claim index's order is read as
text on Cairn's FerretDB build (`kernel.db.INDEX_ORDER`), where integers must have one number of
digits. A clock stored before activities had clocks of their own (`<kind>|<requester>`) still
holds back that requester's new flows until its older requests are served; it is not counted as
a backlogged flow of its VO.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from kernel.claims import now
from kernel.db import Document, IndexSpec, database_errors
from kernel.principal import DEFAULT_VO
from transfers.shares import DEFAULT_ACTIVITY, activity_shares, offsets, stride, vo_shares

TURNS = "request_turns"
SERVED = "@served"  # the service frontiers' documents: "@served|<kind>" (requesters are "kind:name")
GIVEN = "@given"  # there: every request queued before turns existed has one (`request_claims.give_turns`)
FIRST_TURN = 10**15
LAST_TURN = 10**16 - 1

INDEXES = [
    # backlog(): a VO's flows of a kind whose clocks are ahead of the frontier
    IndexSpec(TURNS, [("kind", 1), ("vo", 1), ("turn", 1)], name="request_turns_backlog"),
]


def clock_of(kind: str, requester: str, activity: str) -> str:
    return f"{kind}|{requester}|{activity}"


async def take_turns(db: AsyncDatabase[Document], kind: str, requester: str, count: int, *,
                     vo: str | None = None, activity: str = "default") -> list[int]:
    """Turns for requester's `count` new requests of `kind` and `activity`, in order: after its
    earlier ones, not before the frontier, spaced by the flow's weight. Two submissions of one
    flow at once get disjoint turns (the `$inc` is atomic)."""
    vo = vo or DEFAULT_VO
    vos, activities = await vo_shares(db), await activity_shares(db)
    # An activity without a share of its own is the default's flow: requesters name activities
    # freely, and a name per submission would otherwise store a clock each time and count as
    # that many backlogged flows, outweighing the VO's other users (`shares.stride`).
    activity = activity if activity in activities else DEFAULT_ACTIVITY
    clock, served_id, legacy = clock_of(kind, requester, activity), f"{SERVED}|{kind}", f"{kind}|{requester}"
    with database_errors():
        known = {doc["_id"]: int(doc["turn"]) async for doc in db[TURNS].find({"_id": {"$in": [served_id, legacy]}})}
    frontier = known.get(served_id, FIRST_TURN)
    others = await backlog(db, kind, vo, frontier, excluding=clock) if vos.split else {}
    steps, span = offsets(count, stride(vos, vo, activities, activity, others))
    with database_errors():
        await db[TURNS].update_one({"_id": clock}, {"$max": {"turn": max(frontier, known.get(legacy, 0))},
                                                    "$set": {"kind": kind, "vo": vo, "activity": activity}},
                                   upsert=True)
        before = await db[TURNS].find_one_and_update({"_id": clock}, {"$inc": {"turn": span}},
                                                     return_document=ReturnDocument.BEFORE)
    start = int(before["turn"]) if before else frontier
    return [min(start + step, LAST_TURN) for step in steps]


async def backlog(db: AsyncDatabase[Document], kind: str, vo: str, frontier: int, *,
                  excluding: str = "") -> dict[str, int]:
    """A VO's backlogged flows of `kind` (their clocks, one past their last turn, beyond the
    frontier's next turn) counted by activity, `excluding` one; one `$group` over the
    `request_turns_backlog` range."""
    flows = {"kind": kind, "vo": vo, "turn": {"$gt": frontier + 1}, "_id": {"$ne": excluding}}
    with database_errors():
        cursor = await db[TURNS].aggregate([{"$match": flows}, {"$group": {"_id": "$activity", "n": {"$sum": 1}}}])
        return {str(row["_id"]): int(row["n"]) async for row in cursor}


async def backlog_by_vo(db: AsyncDatabase[Document], kind: str) -> dict[str, int]:
    """Every VO's backlogged flows of `kind` (what the shares are split among), by VO."""
    flows = {"kind": kind, "turn": {"$gt": await frontier(db, kind) + 1}}
    with database_errors():
        cursor = await db[TURNS].aggregate([{"$match": flows}, {"$group": {"_id": "$vo", "n": {"$sum": 1}}}])
        return {str(row["_id"]): int(row["n"]) async for row in cursor}


async def frontier(db: AsyncDatabase[Document], kind: str) -> int:
    """The highest turn of `kind` claimed so far."""
    with database_errors():
        served = await db[TURNS].find_one({"_id": f"{SERVED}|{kind}"})
    return int(served["turn"]) if served else FIRST_TURN


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
