"""File removals' counts that a server killed between its delete and its count cannot lose or double
(`catalogue.usage_claims`).

A file removal (`catalogue.file_removal.remove_records`) deletes the records it marked, then takes
them off the usage counters of their directories and SEs: a server killed in between left the
counters holding files that were gone, for good. Now, once it has marked and read its records, the
call claims its mark's token PENDING with each record as read (`planned`: LFN, GUID, size,
replicas' SEs) and notes itself on the records those may change; after its deletes it settles what
it removed; a call that fails after its intent (the database gone mid-delete) counts off what it
deleted, as the sweep would, before it lets its other records go (`give_up`: before, a retry could
remove and count those, and the sweep count them again). The transfer workers' sweep
(`settle_stale`) counts for a call left PENDING the planned records whose GUID no record holds any
more (index files_by_guid), settles it, and then takes the call's marks past half their lease off
the records it left (a retry removes them at once, not after the marks' lease). By then the call's
deletes are over: it deletes only within half its marks' lease (`kernel.marks.Mark.delete`,
REMOVAL_LEASE / 2, the sweep's default wait), and until the lease ends no other call moves or
removes what it marked. So the sweep counts only while the lease lasts (less TAKEOVER_MARGIN,
after its read): past it, another removal may have taken a record over and counted it off itself,
and the sweep settles the claim counting nothing (logged).

What is left, for `cairn usage rebuild`: a claim the sweep reaches only after its marks' lease
(the workers stopped for over a minute; its records stay counted); a record whose replicas changed
between the read and the delete (counted off by its replicas as read); a GUID registered again
within the sweep's wait (not counted off).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage_claims
from catalogue.collection_names import FILES
from catalogue.usage import COUNTING, KEYS, REMOVAL_LEASE, REMOVING, USAGE_CLAIMS, Usage, add_to_counters
from kernel.db import Document, database_errors, read_by_ids
from kernel.errors import ServiceUnavailable
from kernel.marks import by_ids, within

KIND = "removal"
MARKED_AT, PLANS = "marked_at", "plans"  # a claim's COUNTING: when the call marked its records, and them as read
# The part of the marks' lease the sweep keeps clear of their end: other servers' clocks, and a
# sweep slow between its read and its settle.
TAKEOVER_MARGIN = dt.timedelta(seconds=15)
log = logging.getLogger("cairn.usage")


def planned(doc: Mapping[str, Any]) -> Document:
    """What removing the record `doc` (as read) takes off: its size and replicas' SEs."""
    return {"lfn": doc["_id"], "guid": doc.get("guid"), "size": int(doc.get("size") or 0),
            "ses": [r["se"] for r in doc.get("replicas") or []]}


def totals(plans: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """What removing the records `plans` (`planned`) takes off the usage records."""
    usage = Usage()
    for plan in plans:
        usage.file(plan["lfn"], plan["size"], -1)
        for se in plan["ses"]:
            usage.replica(se, plan["size"], -1)
    return usage.totals()


async def intend(db: AsyncDatabase[Document], token: str, marked_at: dt.datetime,
                 records: Mapping[str, Document]) -> list[str]:
    """Before deleting `records` (as read, with guid, size and replicas.se; marked at
    `marked_at`): claim `token` with them and note it on the usage records they may change;
    returns those."""
    plans = [planned(doc) for doc in records.values()]
    keys = sorted(totals(plans))
    await usage_claims.intend(db, token, keys, kind=KIND, counting={MARKED_AT: marked_at, PLANS: plans})
    return keys


async def settle(db: AsyncDatabase[Document], token: str, keys: Sequence[str], removed: Iterable[Document]) -> None:
    """After the deletes: take what the call `removed` off, each noted record once; a record it
    did not note (a replica on another SE by the time it deleted) directly, as nobody else
    counts it."""
    deltas = totals(planned(doc) for doc in removed)
    noted = set(keys)
    await usage_claims.settle(db, token, keys, {k: v for k, v in deltas.items() if k in noted}, keep=False)
    if rest := {k: v for k, v in deltas.items() if k not in noted}:
        await add_to_counters(db, rest)


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = usage_claims.STALE_S) -> int:
    """Finish the counts of removals that died (or stalled) between their intent and their
    count: the claims PENDING for longer than `older_than_s`, each counting off the planned
    records whose GUID (or, without one, LFN) no record holds. Returns the calls settled."""
    stale = await usage_claims.stale(db, older_than_s, KIND)
    for claim in stale:
        await _settle_claim(db, claim)
        await _free_kept(db, claim)
    return len(stale)


async def _free_kept(db: AsyncDatabase[Document], claim: Document) -> None:
    """Take the dead call's marks off the records it did not delete, once its count is settled
    (not before: a record freed first could be removed and counted by a retry, then counted again
    here), and only marks past half their lease (the call, were it only slow, can no longer delete
    by them: `kernel.marks.Mark.delete`): a retry removes the records at once rather than after
    the marks' lease. A sweep sooner than that (a short `usage_settle_after_s`) leaves them to lapse."""
    lfns = [p["lfn"] for p in (claim.get(COUNTING) or {}).get(PLANS) or []]
    spent = {f"{REMOVING}.token": claim["_id"], f"{REMOVING}.at": {"$lt": dt.datetime.now(dt.UTC) - REMOVAL_LEASE / 2}}
    with database_errors():
        for flt in by_ids(lfns, spent):
            await db[FILES].update_many(flt, {"$unset": {REMOVING: ""}})


async def give_up(db: AsyncDatabase[Document], token: str) -> bool:
    """A removal that failed after its intent (the database gone mid-delete) counts off what it
    deleted, as the sweep would, before its marks go: taken off first, a retry could delete the
    rest and count it, and the sweep count it a second time. False when the database did not
    answer (the call then leaves its marks to lapse and its claim to the sweep)."""
    try:
        with database_errors():
            claim = await db[USAGE_CLAIMS].find_one({"_id": token})
        if claim is not None:
            await _settle_claim(db, claim)
    except ServiceUnavailable:
        return False
    return True


async def _settle_claim(db: AsyncDatabase[Document], claim: Document) -> None:
    """Count off the records of a claim left PENDING whose GUID (or LFN) is gone, and settle it."""
    counting = claim.get(COUNTING) or {}
    plans = counting.get(PLANS) or []
    with database_errors():
        guids = {d["guid"] for d in await db[FILES].find(  # files_by_guid
            {"guid": {"$in": [p["guid"] for p in plans if p.get("guid")]}}, {"guid": 1}).to_list()}
        lfns = {d["_id"] async for d in read_by_ids(db[FILES], [p["lfn"] for p in plans if not p.get("guid")],
                                                   {"_id": 1})}
    gone = [p for p in plans if (p["guid"] not in guids if p.get("guid") else p["lfn"] not in lfns)]
    # Now, right after the read, still inside the marks' lease (less TAKEOVER_MARGIN for the clocks
    # of other servers): no other removal has taken over (and counted off) one of its records yet.
    if not within(counting.get(MARKED_AT), REMOVAL_LEASE - TAKEOVER_MARGIN):
        # Read once another removal could have taken a record over and counted it off itself.
        log.warning("file removal %s left its count pending past its marks' lease: counting nothing; "
                    "`cairn usage rebuild` sets its %d record(s) right", claim["_id"], len(gone))
        gone = []
    await usage_claims.settle(db, claim["_id"], claim.get(KEYS) or [], totals(gone), keep=False)

