"""File moves that a server killed half-way cannot leave done twice, half done or miscounted
(`catalogue.usage_claims`).

A file move (`catalogue.file_move`) inserts its copy at the destination, deletes the original
under its mark, then takes the file off its old directories' counts and onto its new ones. A
server killed after the insert left the copy beside the original for good (the file at two LFNs,
both naming the same bytes, the destination taken), and one killed after the delete left the
counts on the old directories. Now the call claims its mark's token PENDING before its first
insert, with the move as planned (PLAN: source, destination, the original's GUID, creation time
and size; KIND "move"), noted on the usage records of both places' directories, and its copy
carries the token (COPY_CALL) until it is placed. Once the original is deleted the call counts the
move (`settle`); a move that gave up takes its copy back, settles counting nothing (`give_up`),
and only then takes its mark off.

The transfer workers' sweep (`settle_stale`) finishes a claim left PENDING. It first takes the
call's mark off the original, so that the call, were it only slow, deletes nothing from then on
(its delete is by its mark), and only then looks for the original. Still at its place (the mark
was on it, or its GUID and creation time are there), the move did not happen: the sweep notes that
on the claim (UNDONE), takes back the copy carrying the token and settles counting nothing; the
file can be moved again at once. Gone, the move happened: the copy is given its GUID if the call
did not get that far (with the move's two events), and the move is counted, while inside the
marks' lease (less TAKEOVER_MARGIN): until then no other call could have moved or removed the
original. Past it, the sweep counts nothing and logs the move for `cairn usage rebuild`; a copy
beside its original is still taken back.

What is left: a call killed between placing its copy and appending the move's events leaves the
feed without them (the records and counts are right); a sweep killed right after taking a mark
off, whose file another call then moves or removes before the next sweep, has that sweep place the
copy (a second record of the file, or one back at the destination, counted). `cairn usage rebuild`
settles the claims of dead moves this way first (`catalogue.usage_routes`), and drops those
younger than the sweep's wait (it counts the records as they are): a copy such a move left beside
its original stays.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, guid_holds, usage_claims
from catalogue.collection_names import FILES
from catalogue.usage import COPY_CALL, COUNTING, KEYS, REMOVAL_LEASE, REMOVING, USAGE_CLAIMS, Usage
from kernel.db import Document, database_errors
from kernel.errors import ServiceUnavailable
from kernel.marks import Mark, within

KIND = "move"
MARKED_AT, PLAN, UNDONE = "marked_at", "plan", "undone"  # a claim's COUNTING
TAKEOVER_MARGIN = dt.timedelta(seconds=15)  # as `catalogue.removal_counts`: clocks, a slow sweep
log = logging.getLogger("cairn.usage")


@dataclass
class Claim:
    """A move call's claim: its token (its mark's), the usage records noted, the move planned."""

    token: str
    keys: list[str]
    plan: Document


def planned(source: str, destination: str, record: Mapping[str, Any]) -> Document:
    return {"source": source, "destination": destination, "guid": record.get("guid"),
            "created": record.get("created"), "size": int(record.get("size") or 0)}


def totals(plan: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """What the move takes off its old directories and adds to its new ones (none of their
    common ancestors: nothing of theirs changes)."""
    usage = Usage()
    usage.file(plan["source"], plan["size"], -1)
    usage.file(plan["destination"], plan["size"], +1)
    return usage.totals()


async def intend(db: AsyncDatabase[Document], mark: Mark, source: str, destination: str,
                 record: Mapping[str, Any], claim: Claim | None) -> Claim:
    """Before a copy of `record` (as read under `mark`) is inserted: claim the call's token with
    the move as planned, noted on the usage records it changes. Made once per call; a later
    round that read another size plans that (one update)."""
    plan = planned(source, destination, record)
    if claim is None:
        keys = sorted(totals(plan))
        await usage_claims.intend(db, mark.token, keys, kind=KIND, counting={MARKED_AT: mark.at, PLAN: plan})
        return Claim(mark.token, keys, plan)
    if plan != claim.plan:
        with database_errors():
            await db[USAGE_CLAIMS].update_one({"_id": claim.token}, {"$set": {f"{COUNTING}.{PLAN}": plan}})
        claim.plan = plan
    return claim


async def settle(db: AsyncDatabase[Document], claim: Claim) -> None:
    """The original is deleted: count the move, each noted record once."""
    await usage_claims.settle(db, claim.token, claim.keys, totals(claim.plan), keep=False)


async def give_up(db: AsyncDatabase[Document], token: str) -> bool:
    """The move `token` gave up with its original in place and its copy taken back: its claim,
    if it was made, settled counting nothing. False when the database did not answer (the call
    then leaves its mark to lapse and its claim to the sweep: taken off first, another call could
    move the file before the claim goes, and the sweep would count that move for this one)."""
    try:
        with database_errors():
            claim = await db[USAGE_CLAIMS].find_one({"_id": token}, {KEYS: 1})
        if claim is not None:
            await usage_claims.settle(db, token, list(claim.get(KEYS) or []), {}, keep=False)
    except ServiceUnavailable:
        return False
    return True


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = usage_claims.STALE_S) -> int:
    """Finish the moves that died (or stalled) between their claim and their count, as the
    module says. Returns the calls settled."""
    stale = await usage_claims.stale(db, older_than_s, KIND)
    for claim in stale:
        counting = claim.get(COUNTING) or {}
        found = Claim(claim["_id"], list(claim.get(KEYS) or []), counting.get(PLAN) or {})
        if counting.get(UNDONE) or await _stayed(db, found):
            await _take_back(db, found)
        elif within(counting.get(MARKED_AT), REMOVAL_LEASE - TAKEOVER_MARGIN):  # no takeover yet
            await _finish(db, found)
        else:
            log.warning("file move %s (%s to %s) left pending past its marks' lease: counting nothing; "
                        "`cairn usage rebuild` sets the counts right", found.token, found.plan.get("source"),
                        found.plan.get("destination"))
            await usage_claims.settle(db, found.token, found.keys, {}, keep=False)
    return len(stale)


async def _stayed(db: AsyncDatabase[Document], claim: Claim) -> bool:
    """Whether the move's original is still at its place: the call's mark taken off it (a call
    only slow, not dead, then deletes nothing: its delete is by its mark), or, the mark gone (the
    call gave up, or it lapsed and another call took the file over), the record there with the
    original's GUID and creation time: a file registered there since is not taken for it (were it
    given the GUID, the sweep would take back the only record of the moved file)."""
    source = claim.plan.get("source")
    with database_errors():
        taken = await db[FILES].update_one({"_id": source, f"{REMOVING}.token": claim.token},
                                           {"$unset": {REMOVING: ""}})
        if taken.modified_count:
            return True
        original = await db[FILES].find_one({"_id": source}, {"guid": 1, "created": 1})
    return original is not None and (original.get("guid"), original.get("created")) == (
        claim.plan.get("guid"), claim.plan.get("created"))


async def _take_back(db: AsyncDatabase[Document], claim: Claim) -> None:
    """The move did not happen: noted so first (a sweep cut short does the same next time), then
    the copy carrying the call's token taken back, and the claim settled counting nothing."""
    source, destination = claim.plan.get("source"), claim.plan.get("destination")
    with database_errors():
        await db[USAGE_CLAIMS].update_one({"_id": claim.token}, {"$set": {f"{COUNTING}.{UNDONE}": True}})
        await db[FILES].update_one({"_id": source, f"{REMOVING}.token": claim.token}, {"$unset": {REMOVING: ""}})
        await db[FILES].delete_one({"_id": destination, COPY_CALL: claim.token})
    await usage_claims.settle(db, claim.token, claim.keys, {}, keep=False)


async def _finish(db: AsyncDatabase[Document], claim: Claim) -> None:
    """The move happened: its copy given its GUID (and the move told) if the call did not get
    that far, then the move counted."""
    source, destination, guid = str(claim.plan["source"]), str(claim.plan["destination"]), claim.plan.get("guid")
    with database_errors():
        unplaced = await db[FILES].find_one({"_id": destination, COPY_CALL: claim.token}, {"_id": 1})
    if unplaced is not None:
        if guid:
            await guid_holds.restore(db[FILES], [(destination, str(guid))])
        with database_errors():
            await db[FILES].update_one({"_id": destination, COPY_CALL: claim.token},
                                       {"$unset": {COPY_CALL: "", **({} if guid else {"moving_guid": ""})}})
        await change_feed.append(db, [change_feed.event("file_removed", source, moved_to=destination),
                                      change_feed.event("file_registered", destination, moved_from=source)])
    await settle(db, claim)
