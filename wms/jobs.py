"""The `jobs` collection: queries and guarded state changes, nothing else.

A job document holds its description, its owner and group, its state with a history of
(state, time, reason), and what the checker, matcher and pilot recorded about it. Every state
change is one find_one_and_update whose filter names the states it may leave (and, for pilot
reports, the attempt and pilot), so concurrent daemons and pilots cannot both win.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any, NotRequired, TypedDict

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel import claims
from kernel.db import (
    INDEX_ORDER,
    Document,
    IndexSpec,
    bulk_write_chunked,
    count_by,
    database_errors,
    find_in_turn,
    increment,
    iterate,
    read_by_ids,
)
from kernel.errors import NotFound
from kernel.principal import DEFAULT_VO, GLOBAL_VO
from wms import states

JOBS = "jobs"
COUNTERS = "counters"
# One document per (job, attempt) that left `waiting`: inserting it is the claim of that attempt.
CLAIMS = "job_claims"
# VOs whose job ids are the plain numbers of the installation-wide counter (as before VOs).
LOCAL_IDS = frozenset({DEFAULT_VO, GLOBAL_VO})
# How long a checker pass holds its jobs before `clear_stale_claims` gives them to another.
CHECK_LEASE_S = 300.0

OPEN_STATES = [state for state in states.ALL if state not in states.FINAL]

INDEXES = [
    # claim_batch (checker: received / staging due), stalled_jobs (watchdog)
    IndexSpec(JOBS, [("state", 1), ("recheck_at", 1)], name="jobs_by_state_recheck", index_order=True),
    IndexSpec(JOBS, [("state", 1), ("heartbeat_at", 1)], name="jobs_by_state_heartbeat", index_order=True),
    # list_jobs for one owner, newest first
    IndexSpec(JOBS, [("owner", 1), ("submitted", -1)], name="jobs_by_owner"),
    IndexSpec(JOBS, [(claims.OWNER, 1)], name="jobs_by_lease_owner", sparse=True, index_order=True),
    # count_by_vo_and_state (GET /metrics), on the embedded database
    IndexSpec(JOBS, [("state", 1), ("vo", 1)], name="jobs_by_state_vo", group_count=True),
    # stage_requests.left_holding (watchdog): the few jobs flagged as holding staging copies
    IndexSpec(JOBS, [("stage_requests_held", 1)], name="jobs_stage_requests_held", sparse=True, index_order=True),
    # claims_made (watchdog): the attempts' claims in the order they were made
    IndexSpec(CLAIMS, [("at", 1)], name="job_claims_by_time", index_order=True),
]
# The counter document holding when the claims the watchdog has settled were made (`claims_made`).
CLAIMS_SETTLED = "job_claims_settled"


class HistoryEntry(TypedDict):
    state: str
    time: dt.datetime
    reason: str


class JobRecord(TypedDict):
    """A document of `jobs` as submission writes it; the checker, matcher and pilot add fields
    (`site`, `pilot`, `heartbeat_at`, `exit_code`, `stdout`, ...) as the job moves on."""

    _id: str
    name: str
    owner: str
    group: str
    groups: list[str]
    scopes: list[str]  # the rights delegated to the job for registering its outputs
    vo: str
    description: dict[str, Any]  # the JobDescription as JSON
    priority: int
    state: str
    reason: str
    history: list[HistoryEntry]
    submitted: dt.datetime
    updated: dt.datetime
    recheck_at: dt.datetime
    attempt: int
    reschedules: int
    output_salt: NotRequired[str]  # the secret part of its outputs' GUIDs (`wms.outputs.output_guid`)
    site: NotRequired[str]
    lease_owner: NotRequired[str | None]  # kernel.claims: a checker pass or matcher holding the job
    lease_expires: NotRequired[dt.datetime | None]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def history_entry(state: str, reason: str, at: dt.datetime | None = None) -> HistoryEntry:
    return {"state": state, "time": at or now(), "reason": reason}


def counter_id(vo: str) -> str:
    """The counter document of a VO's job ids (see `allocate_ids`)."""
    return JOBS if vo in LOCAL_IDS else f"{JOBS}:{vo}"


async def allocate_ids(db: AsyncDatabase[Document], count: int, vo: str = DEFAULT_VO) -> list[str]:
    """`count` fresh job ids of VO `vo` in one round trip (a counter document reserves a range).

    Each VO counts its own jobs, so the ids a user sees leave no gap for another VO's submissions.
    The VO `local` (and the global VO of installation admins) keeps the plain numbers it always
    had (`1`, `2`, ...); another VO's ids are `VO-N` (`cta-1`): a `-` never appears in a plain
    number and the VO's name is everything before the last `-`, so no two VOs' ids collide.
    """
    with database_errors():
        doc = await db[COUNTERS].find_one_and_update(
            {"_id": counter_id(vo)}, increment({"n": count}), upsert=True, return_document=ReturnDocument.AFTER
        )
    assert doc is not None
    last = int(doc["n"])
    prefix = "" if vo in LOCAL_IDS else f"{vo}-"
    return [f"{prefix}{n}" for n in range(last - count + 1, last + 1)]


async def insert_jobs(db: AsyncDatabase[Document], docs: Sequence[JobRecord]) -> None:
    with database_errors():
        await db[JOBS].insert_many([dict(d) for d in docs], ordered=False)


async def get_job(db: AsyncDatabase[Document], job_id: str) -> Document:
    with database_errors():
        doc = await db[JOBS].find_one({"_id": job_id})
    if doc is None:
        raise NotFound(f"job {job_id} does not exist")
    return doc


async def get_jobs(db: AsyncDatabase[Document], job_ids: Sequence[str], *,
                   state: str | None = None) -> list[Document]:
    """The jobs among `job_ids` that exist (and are in `state`), by `_id` in slices (kernel.db.read_by_ids)."""
    flt = {"state": state} if state is not None else None
    return [doc async for doc in read_by_ids(db[JOBS], job_ids, flt=flt)]


def list_jobs(
    db: AsyncDatabase[Document], *, owner: str | None, state: str | None, limit: int, where: Document | None = None
) -> AsyncIterator[Document]:
    """Jobs newest first, optionally of one owner and one state, and matching `where` (e.g. the
    caller's VO) (index jobs_by_owner)."""
    query: Document = dict(where or {})
    if owner is not None:
        query["owner"] = owner
    if state is not None:
        query["state"] = state
    projection = {"stdout": 0, "stderr": 0, "history": 0}
    return iterate(db[JOBS].find(query, projection).sort([("submitted", -1), ("_id", -1)]).limit(limit))


async def page_jobs(db: AsyncDatabase[Document], *, owner: str | None, state: str | None, after: str | None,
                    limit: int, where: Document | None = None) -> list[Document]:
    """One page of `list_jobs`, continuing after the job `after` (keyset on submitted then id, so
    a page costs the same however deep it is); an `after` that is unknown or outside `where` (the
    caller's VO) is NotFound."""
    query: Document = {**(where or {}), **{k: v for k, v in {"owner": owner, "state": state}.items() if v is not None}}
    if after is not None:
        with database_errors():
            last = await db[JOBS].find_one({**(where or {}), "_id": after}, {"submitted": 1})
        if last is None:
            raise NotFound(f"job {after} does not exist")
        query["$or"] = [{"submitted": {"$lt": last["submitted"]}},
                        {"submitted": last["submitted"], "_id": {"$lt": last["_id"]}}]
    projection = {"stdout": 0, "stderr": 0, "history": 0}
    with database_errors():
        return await db[JOBS].find(query, projection).sort([("submitted", -1), ("_id", -1)]).limit(limit).to_list()


async def transition(
    db: AsyncDatabase[Document],
    job_id: str,
    from_states: Sequence[str],
    to_state: str,
    reason: str,
    *,
    guard: Document | None = None,
    set_fields: Document | None = None,
    unset_fields: Sequence[str] = (),
    inc: Document | None = None,
) -> Document | None:
    """Move a job from one of `from_states` to `to_state`; None when the guard did not hold."""
    at = now()
    update: Document = {
        "$set": {"state": to_state, "reason": reason, "updated": at, **(set_fields or {})},
        "$push": {"history": history_entry(to_state, reason, at)},
    }
    if unset_fields:
        update["$unset"] = {name: "" for name in unset_fields}
    if inc:
        update.update(increment(inc))
    with database_errors():
        return await db[JOBS].find_one_and_update(
            {"_id": job_id, "state": {"$in": list(from_states)}, **(guard or {})},
            update,
            return_document=ReturnDocument.AFTER,
        )


async def claim_attempt(db: AsyncDatabase[Document], job_id: str, attempt: int, by: str) -> bool:
    """Take a waiting job's attempt out of the queue for good; exactly one caller ever gets True.

    The unique `_id` makes the insert the guard, so neither the matcher nor a kill has to
    filter the jobs collection on its state (an `_id` lookup everywhere, fast on any backend).
    """
    try:
        with database_errors():
            await db[CLAIMS].insert_one({"_id": f"{job_id}:{attempt}", "by": by, "at": now()})
    except DuplicateKeyError:
        return False
    return True


async def claims_made(db: AsyncDatabase[Document], since: dt.datetime | None, before: dt.datetime,
                      limit: int) -> list[Document]:
    """Attempts' claims made from `since` (included: the last one read again is harmless) until
    `before`, oldest first (index job_claims_by_time, under INDEX_ORDER: `at` is a date in every claim)."""
    made: Document = {"$lte": before, **({"$gte": since} if since is not None else {})}
    with database_errors():
        return await db[CLAIMS].find({"at": made}, comment=INDEX_ORDER).sort("at", 1).limit(limit).to_list()


async def claims_settled_until(db: AsyncDatabase[Document]) -> dt.datetime | None:
    """When the claims the watchdog has looked at were made (None: it never looked)."""
    with database_errors():
        doc = await db[COUNTERS].find_one({"_id": CLAIMS_SETTLED})
    return None if doc is None else doc["at"]


async def set_claims_settled_until(db: AsyncDatabase[Document], at: dt.datetime) -> None:
    with database_errors():
        await db[COUNTERS].update_one({"_id": CLAIMS_SETTLED}, {"$set": {"at": at}}, upsert=True)


async def set_state_claimed(
    db: AsyncDatabase[Document], job_id: str, to_state: str, reason: str, *, set_fields: Document | None = None
) -> Document | None:
    """Move a job whose current attempt the caller has claimed (filter on `_id` alone)."""
    at = now()
    with database_errors():
        return await db[JOBS].find_one_and_update(
            {"_id": job_id},
            {"$set": {"state": to_state, "reason": reason, "updated": at, **(set_fields or {})},
             "$push": {"history": history_entry(to_state, reason, at)}},
            return_document=ReturnDocument.AFTER,
        )


async def find_job(db: AsyncDatabase[Document], job_id: str) -> Document | None:
    with database_errors():
        return await db[JOBS].find_one({"_id": job_id}, {"stdout": 0, "stderr": 0, "history": 0})


async def update_fields(db: AsyncDatabase[Document], job_id: str, guard: Document, fields: Document) -> bool:
    """Set fields without a state change (heartbeats, kill requests); False if the guard failed."""
    with database_errors():
        result = await db[JOBS].update_one({"_id": job_id, **guard}, {"$set": fields})
    return result.matched_count == 1


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


async def mark_enqueued(db: AsyncDatabase[Document], job_ids: Sequence[str]) -> None:
    with database_errors():
        await db[JOBS].update_many({"_id": {"$in": list(job_ids)}}, {"$set": {"enqueued": True}})


async def unqueued_waiting(db: AsyncDatabase[Document], older_than: dt.datetime, limit: int) -> list[Document]:
    """Waiting jobs a checker placed but did not get into a queue (it died in between). Read
    under INDEX_ORDER (`state` a string, `enqueued` a boolean): the watchdog asks every few
    seconds, and a scan of a 100k-job history cost the embedded database 0.6 CPU-s each time."""
    with database_errors():
        return await db[JOBS].find(
            {"state": states.WAITING, "enqueued": False, "updated": {"$lt": older_than}}, {"stdout": 0, "stderr": 0},
            comment=INDEX_ORDER).limit(limit).to_list()


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


async def silent_jobs(db: AsyncDatabase[Document], heard_before: dt.datetime, limit: int) -> list[Document]:
    """Jobs at a pilot whose last heartbeat is older than `heard_before`: one read of
    jobs_by_state_heartbeat per state under INDEX_ORDER (the watchdog asks every few seconds; one
    `$in` of the states scanned a 100k-job history for 0.6 database CPU-s each time)."""
    return await find_in_turn(db[JOBS], ({"state": state, "heartbeat_at": {"$lt": heard_before}}
                                         for state in states.AT_PILOT), {"stdout": 0, "stderr": 0}, limit=limit)


async def count_by_state(db: AsyncDatabase[Document], owner: str | None = None,
                         where: Document | None = None) -> dict[str, int]:
    """How many jobs are in each state (of one owner, or all; matching `where`, e.g. a VO);
    index jobs_by_owner for one owner."""
    match = {**({"owner": owner} if owner is not None else {}), **(where or {})}
    stages: list[Document] = [{"$match": match}] if match else []
    stages.append({"$group": {"_id": "$state", "n": {"$sum": 1}}})
    with database_errors():
        cursor = await db[JOBS].aggregate(stages)
        rows = await cursor.to_list()
    return {row["_id"]: row["n"] for row in rows}


async def count_by_vo_and_state(db: AsyncDatabase[Document]) -> list[Document]:
    """Jobs per VO and state, every VO's (for monitoring): `[{vo, state, n}]` (no `vo`: DEFAULT_VO)."""
    return await count_by(db[JOBS], ["state", "vo"], absent={"vo": DEFAULT_VO})


def public_view(doc: Document) -> dict[str, Any]:
    """A job as the API shows it (`id` instead of `_id`, internal bookkeeping left out)."""
    out = {k: v for k, v in doc.items() if k not in ("_id", claims.OWNER, claims.EXPIRES, "scopes", "output_salt")}
    return {"id": doc["_id"], **out}


async def adopt_unowned(db: AsyncDatabase[Document], vo: str) -> int:
    """Give the jobs stored before VOs were recorded (no `vo`) to VO `vo` (`cairn vo migrate`)."""
    with database_errors():
        result = await db[JOBS].update_many({"vo": None}, {"$set": {"vo": vo}})
    return int(result.modified_count)


async def count_open_of_vo(db: AsyncDatabase[Document], vo: str, limit: int) -> int:
    """Jobs of VO `vo` that have not ended (done, failed or killed), at most `limit` counted: a VO
    is not deleted while it has some (`catalogue.vo_removal`)."""
    with database_errors():
        # Index: jobs_by_state_vo.
        return await db[JOBS].count_documents({"state": {"$in": OPEN_STATES}, "vo": vo}, limit=limit)
