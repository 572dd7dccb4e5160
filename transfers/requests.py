"""The request queue: units of data movement (transfer, stage, delete) and their life cycle.

A request is one document in `transfer_requests`. Every state change is one atomic update with
a guard in its filter (the state, and the lease owner for work in progress), so any number of
workers can share the queue without transactions:

    queued --claim--> active --complete--> done
      ^                 |  \\--fail------> failed
      |                 |   \\--stage----> staging --staged--> queued
      +---retry_later---+
    queued/staging/active --cancel--> cancelled

A request in `staging` is polled by the stager under a lease of its own (the state stays
`staging`; `stage.next_poll` says when to look again). A transfer worker that registers its
destination replica as `copying` sets `copying_replica` on the request, and clears it once the
replica is available or removed; a request that ended (cancelled while nobody held it, or its
worker died) with the flag still set is swept by `ended_with_copying_replica`.

While a request is not finished it carries `active_key` ("kind:lfn:dest"), unique in a sparse
index, so the same movement is never queued twice; submitting it again returns the request
that already exists.

Here: the request document, its states and indexes, one request by id, and the end of a held
attempt (done, failed, back in the queue, staged) with the bookkeeping of its `copying` replica.
Submitting is `transfers.queueing`, cancelling `transfers.cancellation`, reading many
`transfers.request_reads`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import (
    INDEX_ORDER,
    Document,
    IndexSpec,
    bulk_write_chunked,
    database_errors,
    increment,
    read_by_ids,
    stamp_missing,
)
from transfers.failures import Failure, retry_delay_s
from transfers.turns import INDEXES as TURN_INDEXES

REQUESTS = "transfer_requests"

Kind = Literal["transfer", "stage", "delete"]
KINDS: tuple[Kind, ...] = ("transfer", "stage", "delete")
OPEN_STATES = ("queued", "staging", "active")
FINAL_STATES = ("done", "failed", "cancelled")
STATES = OPEN_STATES + FINAL_STATES
DEFAULT_MAX_ATTEMPTS = 5
# Priorities are one digit: claims read them in index order as text (`request_claims.claim_many`).
MAX_PRIORITY = 9
# The requesters, other than the owner, that asked for an open request while it was open
# (`transfers.queueing`), and their submissions.
JOINED, JOINED_SUBMISSIONS = "joined", "joined_submissions"
JOINS = "joins"  # per requester who joined, how many of its submissions it holds (`queueing._join`)

INDEXES = [
    IndexSpec(REQUESTS, [("active_key", 1)], name="requests_active_key", unique=True, sparse=True),
    # claim(): the next queued request of a kind, by priority, then turn (`transfers.turns`), then age
    IndexSpec(REQUESTS, [("state", 1), ("kind", 1), ("priority", -1), ("turn", 1), ("created", 1)],
              name="requests_claim_turn", index_order=True),
    IndexSpec(REQUESTS, [("state", 1), ("kind", 1), ("priority", -1), ("created", 1)], name="requests_claim",
              retired=True),
    # claim() of expired leases
    IndexSpec(REQUESTS, [("state", 1), ("lease_expires", 1)], name="requests_lease"),
    IndexSpec(REQUESTS, [("requester", 1), ("state", 1)], name="requests_by_requester"),
    IndexSpec(REQUESTS, [("submission", 1), ("state", 1)], name="requests_by_submission"),
    IndexSpec(REQUESTS, [(JOINED, 1)], name="requests_joined", sparse=True),
    IndexSpec(REQUESTS, [(JOINED_SUBMISSIONS, 1)], name="requests_joined_submissions", sparse=True),
    IndexSpec(REQUESTS, [("lfn", 1)], name="requests_by_lfn"),
    # claim_staging(): staging requests whose next poll is due
    IndexSpec(REQUESTS, [("state", 1), ("stage.next_poll", 1)], name="requests_stage_poll", index_order=True),
    # ended_with_copying_replica(): the few requests that still own a `copying` replica
    IndexSpec(REQUESTS, [("copying_replica", 1)], name="requests_copying", sparse=True, index_order=True),
    # releases_asked(): stage requests whose pin a user asked to release, cancelled requests that staged
    IndexSpec(REQUESTS, [("release", 1)], name="requests_release", sparse=True, index_order=True),
    # queue_depths() (GET /metrics): requests counted by state, kind, destination and VO from the
    # index on the embedded database (`kernel.db.count_by`), not by reading every request ever held
    IndexSpec(REQUESTS, [("state", 1), ("kind", 1), ("dest_se", 1), ("vo", 1)], name="requests_by_state_kind_dest_vo",
              group_count=True),
    *TURN_INDEXES,
]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def active_key(kind: str, lfn: str, dest_se: str | None) -> str:
    return f"{kind}:{lfn}:{dest_se or '*'}"


class TransferRequest(claims.Leased):
    """A document of `transfer_requests` as `submit` stores it (workers add `started`,
    `finished`, `finished_by`, `result`, `stage`, `copies`, `copying_replica`, `failed_sources`, `release`...)."""

    _id: str
    kind: Kind
    lfn: str
    vo: NotRequired[str]
    dest_se: str | None
    source_se: str | None
    state: str
    active_key: str
    attempts: int
    max_attempts: int
    not_before: dt.datetime
    last_error: str | None
    error_class: str | None
    requester: str
    submission: str
    activity: str
    priority: int
    created: dt.datetime
    modified: dt.datetime
    pin_lifetime_s: NotRequired[float]
    audit_run: NotRequired[str]
    removed_path: NotRequired[bool]  # the bytes a forced removal left at the path `lfn` (transfers.removed_bytes)
    # The file the requester was authorized for (its GUID, read at submission): the daemons act
    # only on that file, not on another registered at the LFN since (`failures.file_replaced`).
    guid: NotRequired[str]
    turn: NotRequired[int]  # its place among its priority's requests (`transfers.turns`)


async def _finish_active(
    db: AsyncDatabase[Document], request_id: str, worker: str, update: dict[str, Any], *, final: bool,
    from_state: str = "active", inc: dict[str, int] | None = None,
) -> bool:
    at = now()
    change: dict[str, Any] = {"$set": {**update, "modified": at}}
    if final:
        change["$set"]["finished"] = at
        # The caller has confirmed or removed its destination replica before ending the request.
        change["$unset"] = {"active_key": "", "copying_replica": ""}
    if inc:
        change.update(increment(inc))
    return await claims.release(db[REQUESTS], request_id, worker, guard={"state": from_state}, update=change)


async def flag_copying_replica(db: AsyncDatabase[Document], request_id: str) -> None:
    """Note that the request owns a `copying` destination replica (set before the copy starts).

    Unguarded on purpose (an `_id`-only update is the cheapest write): a flag on a request that
    ended meanwhile only makes the sweep look at a replica it will find not `copying`.
    """
    await flag_copying_replicas(db, [request_id])


async def flag_copying_replicas(db: AsyncDatabase[Document], request_ids: Sequence[str]) -> None:
    """`flag_copying_replica` for many requests in one update (by `_id` only, as there)."""
    if not request_ids:
        return
    with database_errors():
        if len(request_ids) == 1:
            await db[REQUESTS].update_one({"_id": request_ids[0]}, {"$set": {"copying_replica": True}})
        else:
            await db[REQUESTS].update_many({"_id": {"$in": list(request_ids)}}, {"$set": {"copying_replica": True}})


async def count_unfinished_copy(db: AsyncDatabase[Document], request_id: str) -> bool:
    """Count the copy an attempt made and confirmed without finishing the request (it lost its
    lease, or was killed), once: only whoever clears `copying_replica` counts it. True if counted.

    Not caught: an attempt whose lease ran out while it still copied, when the attempt that took
    over copied again and finished first; its second copy goes uncounted."""
    with database_errors():
        result = await db[REQUESTS].update_one({"_id": request_id, "copying_replica": True},
                                               {**increment({"copies": 1}), "$unset": {"copying_replica": ""}})
    return result.modified_count == 1


async def release(db: AsyncDatabase[Document], request_id: str, worker: str) -> bool:
    """Give work back to the queue untouched (a worker stopping); the claim's attempt is not counted."""
    return await _finish_active(db, request_id, worker, {"state": "queued", "not_before": now()}, final=False,
                                inc={"attempts": -1})


async def staged_many(db: AsyncDatabase[Document], worker: str, *, done: Sequence[str] = (),
                      requeued: Sequence[str] = (), poll_later: Sequence[str] = (), delay_s: float = 0.0) -> None:
    """The polls' outcomes for many held `staging` requests: one guarded update
    each for the stage requests now done, the transfers back in the queue and those to poll
    again after delay_s (a request this worker no longer holds is left alone)."""
    at = now()
    changes: list[tuple[Sequence[str], dict[str, Any]]] = [
        (done, {"$set": {"state": "done", "result": {"staged": True}, "last_error": None, "modified": at,
                         "finished": at, **claims.FREE}, "$unset": {"active_key": "", "copying_replica": ""}}),
        (requeued, {"$set": {"state": "queued", "not_before": at, "modified": at, **claims.FREE}}),
        (poll_later, {"$set": {"stage.next_poll": at + dt.timedelta(seconds=delay_s), "modified": at,
                               **claims.FREE}}),
    ]
    with database_errors():
        for ids, change in changes:
            if ids:
                await db[REQUESTS].update_many({"_id": {"$in": list(ids)}, claims.OWNER: worker, "state": "staging"},
                                               change)


async def ended_with_copying_replica(db: AsyncDatabase[Document], limit: int = 100) -> list[Document]:
    """Finished requests that may still own a `copying` destination replica (to be cleaned up).
    From `requests_copying` under INDEX_ORDER (the flag is `True` or absent): each worker asks
    every `transfers.worker.SWEEP_EVERY_S`, and on the embedded database a scan decoded every
    ended request the queue ever held (1 database CPU-s per sweep at 100k)."""
    with database_errors():
        cursor = db[REQUESTS].find({"copying_replica": True, "state": {"$in": list(FINAL_STATES)}},
                                   {"lfn": 1, "dest_se": 1, "state": 1}, comment=INDEX_ORDER).limit(limit)
        return await cursor.to_list()


async def clear_copying_replica(db: AsyncDatabase[Document], request_id: str) -> None:
    with database_errors():
        await db[REQUESTS].update_one({"_id": request_id}, {"$unset": {"copying_replica": ""}})


async def complete(
    db: AsyncDatabase[Document], request_id: str, worker: str, result: dict[str, Any], *, copied: bool = False
) -> bool:
    """Mark work done; only the lease holder can, and only once. `copied` counts the copy made
    (`copies`: each finished copy of the request's bytes, whoever made it; duplicates show as
    copies > 1) in the same write."""
    return await _finish_active(db, request_id, worker, {"state": "done", "result": result, "last_error": None},
                                final=True, inc={"copies": 1} if copied else None)


@dataclass(frozen=True)
class End:
    """How one held attempt of a request ends, for `end_many`: the fields to set, whether the
    request is finished (`final`), whether its copy is counted in the same write (`copied`).
    `attempts`: the attempt this worker holds (as claimed), so that a write meant for an earlier
    attempt of the same request, even by the same worker, changes nothing."""

    request_id: str
    fields: dict[str, Any]
    final: bool
    attempts: int | None = None
    copied: bool = False
    # Its destination replica was removed (a failed copy): the request owns none any more.
    clear_copying: bool = False
    guard: Mapping[str, Any] | None = None  # more the request must match (`untagged_since`)


def _end_update(end: End, worker: str, at: dt.datetime, token: str, from_state: str) -> UpdateOne:
    guard: dict[str, Any] = {"_id": end.request_id, claims.OWNER: worker, "state": from_state}
    if end.attempts is not None:
        guard["attempts"] = end.attempts
    guard.update(end.guard or {})
    change: dict[str, Any] = {"$set": {**end.fields, "modified": at, "ended_by": token, **claims.FREE}}
    if end.final:
        # The caller has confirmed or removed its destination replica before ending the request.
        change["$set"].update({"finished": at, "finished_by": worker})
        change["$unset"] = {"active_key": "", "copying_replica": ""}
    elif end.clear_copying:
        change["$unset"] = {"copying_replica": ""}
    if end.copied:
        change.update(increment({"copies": 1}))
    return UpdateOne(guard, change)


async def end_many(db: AsyncDatabase[Document], ends: Sequence[End], worker: str, *,
                   from_state: str = "active", tokens: Sequence[str] = ()) -> set[str]:
    """End many held attempts in one bulk write, each guarded by its lease (and attempt) as
    `complete`, `fail` and `retry_later` are; returns the ids this call ended. A request whose
    lease was lost meanwhile is left alone, so a replay or a worker taking over never sees an
    attempt's end (nor its counters) applied twice. Each write stamps a token of this call, by
    which the ones that took are read back when not all did. `tokens`: the calls' tokens of the
    earlier tries of the same ends (the first is this call's): a try cut short after its write
    and tried again gets back the ends it wrote, to take the steps after them."""
    if not ends:
        return set()
    token = tokens[0] if tokens else uuid.uuid4().hex
    at = claims.now()
    outcome = await bulk_write_chunked(db[REQUESTS], [_end_update(end, worker, at, token, from_state) for end in ends])
    ids = [end.request_id for end in ends]
    if outcome.modified_count == len(ends):
        return set(ids)
    return {doc["_id"] async for doc in read_by_ids(db[REQUESTS], ids, {"_id": 1},
                                                    flt={"ended_by": {"$in": [token, *tokens]}})}


def done_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The fields of a request done with `result`."""
    return {"state": "done", "result": result, "last_error": None}


async def complete_many(db: AsyncDatabase[Document], results: Mapping[str, dict[str, Any]], worker: str, *,
                        copied: bool = False) -> set[str]:
    """`complete` for many requests (`{request_id: result}`) in one bulk write, each guarded by
    its lease as there (and counting its copy when `copied`); returns the ids this call ended (a
    request whose lease was lost meanwhile is left alone: its copy is the caller's to count)."""
    return await end_many(db, [End(rid, done_fields(result), final=True, copied=copied)
                               for rid, result in results.items()], worker)


async def fail(db: AsyncDatabase[Document], request_id: str, worker: str, error: str, error_class: str) -> bool:
    """Give up for good (permanent error, or attempts exhausted)."""
    return await _finish_active(
        db, request_id, worker, {"state": "failed", "last_error": error, "error_class": error_class}, final=True
    )


async def retry_later(
    db: AsyncDatabase[Document], request_id: str, worker: str, error: str, *, delay_s: float,
    update: dict[str, Any] | None = None,
) -> bool:
    """Put the request back in the queue, due after delay_s (exponential backoff is the caller's)."""
    fields = {"state": "queued", "last_error": error, "error_class": "transient",
              "not_before": now() + dt.timedelta(seconds=delay_s), **(update or {})}
    return await _finish_active(db, request_id, worker, fields, final=False)


async def get_request(db: AsyncDatabase[Document], request_id: str) -> Document | None:
    with database_errors():
        return await db[REQUESTS].find_one({"_id": request_id})


def failure_end(request: Document, failure: Failure, *, base_s: float, cap_s: float,
                update: dict[str, Any] | None = None) -> End:
    """How a held request ends after `failure`, by the one rule (`failures.retry_delay_s`): failed
    for good (final), or back in the queue after a backoff."""
    attempts = int(request.get("attempts", 1))
    delay = retry_delay_s(failure, attempts, int(request.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
                          base_s=base_s, cap_s=cap_s)
    if delay is None:
        message = failure.message if failure.permanent else f"gave up after {attempts} attempts: {failure.message}"
        return End(request["_id"], {"state": "failed", "last_error": message, "error_class": failure.reason},
                   final=True, attempts=request.get("attempts"))
    return End(request["_id"], {"state": "queued", "last_error": failure.message, "error_class": failure.reason,
                                "not_before": now() + dt.timedelta(seconds=delay), **(update or {})},
               final=False, attempts=request.get("attempts"))


async def fail_or_retry(
    db: AsyncDatabase[Document], request: Document, worker: str, failure: Failure, *, base_s: float, cap_s: float,
    update: dict[str, Any] | None = None,
) -> bool:
    """End a held request after `failure` (`failure_end`). True when it failed for good (and this
    worker still held it)."""
    end = failure_end(request, failure, base_s=base_s, cap_s=cap_s, update=update)
    return bool(await end_many(db, [end], worker)) and end.final


async def adopt_unowned(db: AsyncDatabase[Document], vo: str) -> int:
    """Give the requests stored before VOs were recorded (no `vo`) to VO `vo` (`cairn vo migrate`)."""
    return await stamp_missing(db[REQUESTS], "vo", vo)
