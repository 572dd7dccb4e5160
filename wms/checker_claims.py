"""A checker pass's hold on its jobs: claimed in a batch under the pass's lease, its outcomes
written in one bulk call, the jobs it put in a task queue marked, and the claims of a pass that
died freed again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import INDEX_ORDER, Document, bulk_write_chunked, database_errors
from wms import states
from wms.jobs import JOBS, history_entry, now

# How long a checker pass holds its jobs before `clear_stale_claims` gives them to another.
CHECK_LEASE_S = 300.0


async def claim_batch(
    db: AsyncDatabase[Document],
    from_state: str,
    to_state: str,
    claim: str,
    limit: int,
    *,
    due_before: dt.datetime | None = None,
) -> list[Document]:
    """Claim up to `limit` jobs in `from_state` for one checker pass (index jobs_by_state_recheck),
    under the lease of the pass's token `claim` (`kernel.claims.claim_many`: three round trips
    whatever the batch size, a job goes to one checker). A pass that dies leaves its jobs to
    `clear_stale_claims` once the lease (CHECK_LEASE_S) ran out. The candidates are read under
    INDEX_ORDER (`state` a string, `recheck_at` a date in every job): Cairn's FerretDB build walks
    the index for the batch instead of sorting every job in `from_state` for each pass.
    """
    query: Document = {"state": from_state}
    if due_before is not None:
        query["recheck_at"] = {"$lte": due_before}
    update: Document = {"$set": {"state": to_state}}
    if to_state != from_state:
        update["$push"] = {"history": history_entry(to_state, "checking input data")}
    return await claims.claim_many(db[JOBS], claim, query, lease_s=CHECK_LEASE_S, sort=[("recheck_at", 1)],
                                   limit=limit, update=update, comment=INDEX_ORDER)


async def apply_outcomes(db: AsyncDatabase[Document], claim: str, outcomes: dict[str, Document]) -> None:
    """Write a checker pass's results in one bulk call.

    Each update is guarded by the pass's claim and skips jobs someone asked to kill meanwhile;
    those keep the claim so that `claimed_jobs` finds them afterwards.
    """
    if not outcomes:
        return
    at = now()
    ops = []
    for job_id, outcome in outcomes.items():
        fields = dict(outcome)
        record = fields.pop("_push_history", True)
        state, reason = fields["state"], fields.get("reason", "")
        update: Document = {
            "$set": {**fields, "updated": at, **claims.FREE},
        }
        if record:
            update["$push"] = {"history": history_entry(state, reason, at)}
        ops.append(UpdateOne({"_id": job_id, claims.OWNER: claim, "kill_requested": {"$ne": True}}, update))
    await bulk_write_chunked(db[JOBS], ops)


async def mark_enqueued(db: AsyncDatabase[Document], job_ids: Sequence[str]) -> int:
    """Record that these jobs are in their task queue; how many were still waiting to be marked
    (one killed or matched since its entry was pushed is not)."""
    with database_errors():
        result = await db[JOBS].update_many({"_id": {"$in": list(job_ids)}, "state": states.WAITING},
                                            {"$set": {"enqueued": True}})
    return result.matched_count


async def claimed_jobs(db: AsyncDatabase[Document], claim: str) -> list[Document]:
    with database_errors():
        return await db[JOBS].find({claims.OWNER: claim}, {"_id": 1, "state": 1}).to_list()


async def clear_stale_claims(db: AsyncDatabase[Document], at: dt.datetime) -> int:
    """Claims left by a checker that died mid-pass (their lease ran out by `at`) become free again
    (its jobs are checked anew). The watchdog asks every few seconds: the stale claims are first
    read from jobs_by_lease_owner under INDEX_ORDER (an owner is a pass's token, a string, or
    null), so the look costs the claims there are, not every job ever run (2 database CPU-s per
    look at a 100k-job history when the updates scanned for them)."""
    stale = {claims.OWNER: {"$gt": ""}, claims.EXPIRES: {"$lt": at}}
    release = {"$set": dict(claims.FREE)}
    with database_errors():
        found = await db[JOBS].find(stale, {"_id": 1}, comment=INDEX_ORDER).to_list()
        if not found:
            return 0
        stale = {"_id": {"$in": [doc["_id"] for doc in found]}, **stale}
        back = await db[JOBS].update_many(
            {**stale, "state": states.CHECKING},
            {"$set": {**claims.FREE, "state": states.RECEIVED},
             "$push": {"history": history_entry(states.RECEIVED, "its checker stopped; checking again")}},
        )
        other = await db[JOBS].update_many(stale, release)
    return back.modified_count + other.modified_count
