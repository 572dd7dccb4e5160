"""The `jobs` collection: its document, indexes and ids, one job by id, and guarded state changes.

A job document holds its description, its owner and group, its state with a history of
(state, time, reason), and what the checker, matcher and pilot recorded about it. Every state
change is one find_one_and_update whose filter names the states it may leave (and, for pilot
reports, the attempt and pilot), so concurrent daemons and pilots cannot both win.

Reads of many jobs are `wms.job_reads`; an attempt's claim `wms.job_claims`; a checker pass's
hold on its jobs `wms.checker_claims`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import Document, IndexSpec, database_errors, increment
from kernel.errors import NotFound
from kernel.principal import DEFAULT_VO, GLOBAL_VO
from wms import states

JOBS = "jobs"
COUNTERS = "counters"
# One document per (job, attempt) that left `waiting`: inserting it is the claim of that attempt.
CLAIMS = "job_claims"
# VOs whose job ids are the plain numbers of the installation-wide counter (as before VOs).
LOCAL_IDS = frozenset({DEFAULT_VO, GLOBAL_VO})


OPEN_STATES = [state for state in states.ALL if state not in states.FINAL]

INDEXES = [
    # checker_claims.claim_batch (checker: received / staging due), stalled_jobs (watchdog)
    IndexSpec(JOBS, [("state", 1), ("recheck_at", 1)], name="jobs_by_state_recheck", index_order=True),
    IndexSpec(JOBS, [("state", 1), ("heartbeat_at", 1)], name="jobs_by_state_heartbeat", index_order=True),
    # job_reads.list_jobs for one owner, newest first
    IndexSpec(JOBS, [("owner", 1), ("submitted", -1)], name="jobs_by_owner"),
    IndexSpec(JOBS, [(claims.OWNER, 1)], name="jobs_by_lease_owner", sparse=True, index_order=True),
    # job_reads.count_by_vo_and_state (GET /metrics), on the embedded database
    IndexSpec(JOBS, [("state", 1), ("vo", 1)], name="jobs_by_state_vo", group_count=True),
    # stage_requests.left_holding (watchdog): the few jobs flagged as holding staging copies
    IndexSpec(JOBS, [("stage_requests_held", 1)], name="jobs_stage_requests_held", sparse=True, index_order=True),
    # job_claims.claims_made (watchdog): the attempts' claims in the order they were made
    IndexSpec(CLAIMS, [("at", 1)], name="job_claims_by_time", index_order=True),
    # wms.submission_requests: a named submission's jobs, each stored once (read by `$in` of keys)
    IndexSpec(JOBS, [("request", 1)], name="jobs_by_request", unique=True, sparse=True, index_order=True),
]
# The counter document holding when the claims the watchdog has settled were made (`job_claims.claims_made`).
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
    request: NotRequired[str]  # its named submission's key and its place in it (`wms.submission_requests`)
    request_digest: NotRequired[str]
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


def public_view(doc: Document) -> dict[str, Any]:
    """A job as the API shows it (`id` instead of `_id`, internal bookkeeping left out)."""
    out = {k: v for k, v in doc.items()
           if k not in ("_id", claims.OWNER, claims.EXPIRES, "scopes", "output_salt", "request", "request_digest")}
    return {"id": doc["_id"], **out}


async def adopt_unowned(db: AsyncDatabase[Document], vo: str) -> int:
    """Give the jobs stored before VOs were recorded (no `vo`) to VO `vo` (`cairn vo migrate`)."""
    with database_errors():
        result = await db[JOBS].update_many({"vo": None}, {"$set": {"vo": vo}})
    return int(result.modified_count)
