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
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, cast

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from kernel import claims
from kernel.db import (
    INDEX_ORDER,
    Document,
    IndexSpec,
    bulk_write_chunked,
    database_errors,
    find_by_values,
    increment,
    read_by_ids,
    stamp_missing,
)
from kernel.errors import InvalidInput
from transfers.deletion_tags import AUDIT_RUNS, DELETES_REPLICA, TAGGED
from transfers.failures import Failure, retry_delay_s
from transfers.turns import INDEXES as TURN_INDEXES
from transfers.turns import take_turns

REQUESTS = "transfer_requests"

Kind = Literal["transfer", "stage", "delete"]
KINDS: tuple[Kind, ...] = ("transfer", "stage", "delete")
OPEN_STATES = ("queued", "staging", "active")
FINAL_STATES = ("done", "failed", "cancelled")
STATES = OPEN_STATES + FINAL_STATES
DEFAULT_MAX_ATTEMPTS = 5
# Priorities are one digit: claims read them in index order as text (`request_claims.claim_many`).
MAX_PRIORITY = 9
# The requesters, other than the owner, that asked for an open request while it was open (`_join`),
# and their submissions.
JOINED, JOINED_SUBMISSIONS = "joined", "joined_submissions"
ENDED_MEANWHILE = "an identical request ended while this one was submitted; submit again"
# Submissions that may join one request (`_join`): each is kept in the owner's request document,
# so a joiner submitting again and again grew it without bound (each join slower than the last).
MAX_JOINED_SUBMISSIONS = 1000
JOINS_FULL = (f"an identical request of another requester has {MAX_JOINED_SUBMISSIONS} submissions joined "
              "already; follow it by one of those, or submit again once it has ended")
_ROOM_TO_JOIN = {f"{JOINED_SUBMISSIONS}.{MAX_JOINED_SUBMISSIONS - 1}": {"$exists": False}}

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


def _new_request(
    kind: Kind, item: dict[str, Any], *, requester: str, activity: str, priority: int, submission: str,
    max_attempts: int, at: dt.datetime,
) -> TransferRequest:
    lfn = item.get("lfn")
    if not isinstance(lfn, str) or not lfn.startswith("/"):
        raise InvalidInput(f"request item needs an absolute 'lfn': {item!r}")
    dest = item.get("dest_se")
    if kind != "delete" and not isinstance(dest, str):
        raise InvalidInput(f"{kind} request for {lfn} needs a 'dest_se'")
    doc: TransferRequest = {
        "_id": uuid.uuid4().hex,
        "kind": kind,
        "lfn": lfn,
        "dest_se": dest,
        "source_se": item.get("source_se"),
        "state": "queued",
        "active_key": active_key(kind, lfn, dest),
        "attempts": 0,
        "max_attempts": max_attempts,
        "not_before": at,
        "last_error": None,
        "error_class": None,
        "lease_owner": None,
        "lease_expires": None,
        "requester": requester,
        "submission": submission,
        "activity": activity,
        "priority": priority,
        "created": at,
        "modified": at,
    }
    if isinstance(item.get("guid"), str):
        doc["guid"] = item["guid"]
    if kind == "delete" and isinstance(item.get("audit_run"), str):
        doc["audit_run"] = item["audit_run"]  # a dark file of that run (transfers.dark_data)
    if kind == "delete" and item.get("removed_path") is True:  # not one with a user's deletion of the LFN
        doc["removed_path"], doc["active_key"] = True, active_key("delete-removed", lfn, dest)
    if kind == "stage" and item.get("pin_lifetime_s") is not None:
        doc["pin_lifetime_s"] = float(item["pin_lifetime_s"])
    return doc


async def submit(
    db: AsyncDatabase[Document],
    kind: Kind,
    items: Sequence[dict[str, Any]],
    *,
    requester: str,
    activity: str = "default",
    priority: int = 3,
    submission: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    vo: str | None = None,
) -> dict[str, Any]:
    """Queue many requests in O(1) round trips; an identical open request is reused, not doubled
    (another requester's is shared with this one: `_join`). `vo`: the VO of the requester (a
    user's; daemons' requests have none, see catalogue.vos).

    Returns {"submission": id, "successful": {lfn: request_id}, "failed": {lfn: reason}}.
    """
    if kind not in KINDS:
        raise InvalidInput(f"unknown request kind {kind!r}; kinds: {', '.join(KINDS)}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise InvalidInput(f"a request's priority is an integer from 0 to {MAX_PRIORITY}, not {priority!r}")
    submission = submission or uuid.uuid4().hex
    at = now()
    docs: list[TransferRequest] = []
    failed: dict[str, str] = {}
    seen: set[str] = set()
    for item in items:
        try:
            doc = _new_request(kind, item, requester=requester, activity=activity, priority=priority,
                               submission=submission, max_attempts=max_attempts, at=at)
        except InvalidInput as exc:
            failed[str(item.get("lfn"))] = exc.message
            continue
        if doc["active_key"] in seen:
            continue
        if vo is not None:
            doc["vo"] = vo
        seen.add(doc["active_key"])
        docs.append(doc)
    successful: dict[str, str] = {}
    duplicates: list[str] = []
    if docs:
        turns = await take_turns(db, kind, requester, len(docs), vo=vo, activity=activity)
        for doc, turn in zip(docs, turns, strict=True):
            doc["turn"] = turn
        with database_errors():
            try:
                await db[REQUESTS].insert_many(cast(list[Document], docs), ordered=False)
            except BulkWriteError as exc:
                for err in exc.details.get("writeErrors", []):
                    if err.get("code") == 11000:
                        duplicates.append(docs[err["index"]]["active_key"])
                    else:
                        failed[docs[err["index"]]["lfn"]] = err.get("errmsg", "write failed")
    dup_set = set(duplicates)
    for doc in docs:
        if doc["active_key"] not in dup_set and doc["lfn"] not in failed:
            successful[doc["lfn"]] = doc["_id"]
    # requests_active_key: the open requests that already do what was asked
    existing = await find_by_values(db[REQUESTS], "active_key", duplicates,
                                    {"lfn": 1, "requester": 1, "guid": 1, "active_key": 1, "audit_run": 1})
    existing = _same_files(existing, {doc["active_key"]: doc.get("guid") for doc in docs}, failed)
    if kind == "delete" and existing:
        missed = await _tag_deletions(db, existing, {doc["active_key"]: doc for doc in docs})
        for found in [doc for doc in existing if doc["_id"] in missed]:
            failed[found["lfn"]] = ENDED_MEANWHILE
        existing = [doc for doc in existing if doc["_id"] not in missed]
    joined = await _join(db, [doc["_id"] for doc in existing if doc.get("requester") != requester], requester,
                         submission)
    left_out = [doc["_id"] for doc in existing if doc.get("requester") != requester and doc["_id"] not in joined]
    full = await _full(db, left_out) if left_out else set()
    for found in existing:
        if found.get("requester") == requester or found["_id"] in joined:
            successful[found["lfn"]] = found["_id"]
        elif found["_id"] in full:
            failed[found["lfn"]] = JOINS_FULL
        else:  # it ended (its owner cancelled it, say) between the look above and the join
            failed[found["lfn"]] = ENDED_MEANWHILE
    if duplicates:
        for doc in docs:
            if doc["active_key"] in dup_set and doc["lfn"] not in successful and doc["lfn"] not in failed:
                failed[doc["lfn"]] = ENDED_MEANWHILE
    return {"submission": submission, "successful": successful, "failed": failed}


def _same_files(existing: list[Document], guids: Mapping[str, str | None], failed: dict[str, str]) -> list[Document]:
    """The open requests to share: those for the file asked for. One still open for an earlier
    file at the LFN (it will fail, `failures.file_replaced`) is not this request; its LFN fails."""
    same = []
    for doc in existing:
        wanted = guids.get(doc["active_key"])
        if wanted and doc.get("guid") and doc["guid"] != wanted:
            failed[doc["lfn"]] = (f"request {doc['_id']}, for the earlier file at this LFN (GUID {doc['guid']}), "
                                  "is still open; submit again once it has ended")
        else:
            same.append(doc)
    return same


async def _tag_deletions(db: AsyncDatabase[Document], existing: list[Document],
                         asked: Mapping[str, TransferRequest]) -> set[str]:
    """Open deletions that a new one meets (same LFN and SE) take what it asks on top of theirs:
    the audit run of a dark file's deletion (`AUDIT_RUNS`), or the deletion of the replica
    (`DELETES_REPLICA`) when the open one is a dark file's; each such change counts in `TAGGED`,
    by which the reaper's end of an attempt that began before it changes nothing (it is done
    again, seeing it). Returns the ids that ended before they could take it."""
    groups: dict[str | None, list[str]] = {}
    for doc in existing:
        run = asked[doc["active_key"]].get("audit_run")
        if run is not None:
            groups.setdefault(run, []).append(doc["_id"])
        elif doc.get("audit_run"):
            groups.setdefault(None, []).append(doc["_id"])
    missed: set[str] = set()
    for run, ids in groups.items():
        tag: dict[str, Any] = {"$addToSet": {AUDIT_RUNS: run}} if run else {"$set": {DELETES_REPLICA: True}}
        with database_errors():
            result = await db[REQUESTS].update_many({"_id": {"$in": ids}, "state": {"$in": list(OPEN_STATES)}},
                                                    {**tag, **increment({TAGGED: 1})})
        if result.matched_count < len(ids):
            missed |= set(ids) - await _open_among(db, ids, {AUDIT_RUNS: run} if run else {DELETES_REPLICA: True})
    return missed


def user_requester(sub: str) -> str:
    """The requester a user's requests carry (what `GET /requests` shows them)."""
    return f"user:{sub}"


async def _join(db: AsyncDatabase[Document], ids: list[str], requester: str, submission: str) -> set[str]:
    """Another requester's open requests that do what this one asked: shared with it, not handed
    over (`JOINED`, and its submission in `JOINED_SUBMISSIONS`), so it sees them, follows them by
    its submission and may withdraw from them, and their owner's cancel no longer cancels what it
    was told is queued (`transfers.shared_requests`). Returns the ids joined: one that ended
    since it was found is not (it is not the joiner's, nor will it copy anything for them)."""
    if not ids:
        return set()
    with database_errors():
        result = await db[REQUESTS].update_many(
            {"_id": {"$in": ids}, "state": {"$in": list(OPEN_STATES)}, **_ROOM_TO_JOIN},
            {"$addToSet": {JOINED: requester, JOINED_SUBMISSIONS: submission}})
    if result.modified_count == len(ids):  # the submission is new: every open one matched was changed
        return set(ids)
    # (a submission named again, as a production task's, changes nothing where it joined before)
    return await _open_among(db, ids, {JOINED_SUBMISSIONS: submission})


async def _full(db: AsyncDatabase[Document], ids: list[str]) -> set[str]:
    """Those of the open requests `ids` that no further submission may join."""
    return await _open_among(db, ids, {f"{JOINED_SUBMISSIONS}.{MAX_JOINED_SUBMISSIONS - 1}": {"$exists": True}})


async def _open_among(db: AsyncDatabase[Document], ids: list[str], flt: Document) -> set[str]:
    """The requests among `ids` still open that match `flt` (read by `_id`)."""
    return {doc["_id"] async for doc in read_by_ids(db[REQUESTS], ids, {"_id": 1},
                                                    flt={**flt, "state": {"$in": list(OPEN_STATES)}})}


async def submit_transfers(
    db: AsyncDatabase[Document], items: Sequence[dict[str, Any]], *, requester: str, activity: str = "default",
    priority: int = 3, submission: str | None = None, vo: str | None = None,
) -> dict[str, Any]:
    """Queue transfers of `{lfn, dest_se, source_se?}` items (see `submit`)."""
    return await submit(db, "transfer", items, requester=requester, activity=activity, priority=priority,
                        submission=submission, vo=vo)


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


async def cancel(db: AsyncDatabase[Document], query: dict[str, Any]) -> int:
    """Cancel open requests matching query (callers scope it to what the user may cancel).

    A request that asked a tape SE to bring its file online is also asked to be released: the
    stager drops its pin, or stops the staging if it has not finished (`releases_asked`)."""
    at = now()
    cancelled = 0
    change = {"state": "cancelled", "modified": at, "finished": at, **claims.FREE}
    asked: list[dict[str, Any]] = [{"stage.request_id": {"$exists": True}}, {"recall.request_id": {"$exists": True}}]
    with database_errors():
        none_asked = {"stage.request_id": {"$exists": False}, "recall.request_id": {"$exists": False}}
        for recall, extra in (({"$or": asked}, {"release": "asked"}), (none_asked, {})):
            result = await db[REQUESTS].update_many(
                {"$and": [query, {"state": {"$in": list(OPEN_STATES)}}, recall]},
                {"$set": {**change, **extra}, "$unset": {"active_key": ""}},
            )
            cancelled += result.modified_count
    return cancelled


async def ask_release(db: AsyncDatabase[Document], query: dict[str, Any]) -> int:
    """Ask for the pins of done stage requests matching query to be released (the stager does
    it); a request already released or asked is not counted again."""
    with database_errors():
        result = await db[REQUESTS].update_many(
            {**query, "kind": "stage", "state": "done", "release": {"$exists": False}},
            {"$set": {"release": "asked", "modified": now()}})
    return result.modified_count


async def releases_asked(db: AsyncDatabase[Document], limit: int, *,
                         skip_ses: Sequence[str] = ()) -> list[Document]:
    """Requests whose pin a user asked to release (but those on `skip_ses`, tape SEs found away):
    from `requests_release` under INDEX_ORDER (`release` is a string or absent), since the stager
    asks at every cycle, once a second when idle (a scan of a 100k-request history cost the
    embedded database 0.3 CPU-s each time)."""
    query: dict[str, Any] = {"release": "asked"}
    if skip_ses:
        query["stage.se"] = {"$nin": list(skip_ses)}
    with database_errors():
        return await db[REQUESTS].find(query, {"lfn": 1, "stage": 1, "recall": 1},
                                       comment=INDEX_ORDER).limit(limit).to_list()


async def released(db: AsyncDatabase[Document], request_id: str, outcome: str) -> None:
    """The stager has released the pin (outcome "released", or why it could not)."""
    with database_errors():
        await db[REQUESTS].update_one({"_id": request_id, "release": "asked"},
                                      {"$set": {"release": outcome, "released": now()}})


async def get_request(db: AsyncDatabase[Document], request_id: str) -> Document | None:
    with database_errors():
        return await db[REQUESTS].find_one({"_id": request_id})


async def list_requests(db: AsyncDatabase[Document], query: dict[str, Any], *, limit: int) -> list[Document]:
    """Requests matching query, newest first."""
    with database_errors():
        return await db[REQUESTS].find(query).sort("created", -1).limit(limit).to_list()


async def requests_for(db: AsyncDatabase[Document], requester: str) -> list[Document]:
    """Every request a requester made (e.g. "job:<id>"), oldest first."""
    with database_errors():
        # requests_by_requester
        return await db[REQUESTS].find({"requester": requester}).sort("created", 1).to_list()


async def progress(db: AsyncDatabase[Document], query: dict[str, Any]) -> dict[str, int]:
    """Counts by state of the requests matching query (a submission, a requester...)."""
    with database_errors():
        cursor = await db[REQUESTS].aggregate([{"$match": query}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}])
        rows = await cursor.to_list()
    counts = dict.fromkeys(STATES, 0)
    counts.update({row["_id"]: row["n"] for row in rows})
    counts["total"] = sum(counts[s] for s in STATES)
    return counts


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


async def count_open_of_vo(db: AsyncDatabase[Document], vo: str, limit: int) -> int:
    """Requests of VO `vo` still queued, staging or active, at most `limit` counted: a VO is not
    deleted while it has some (`catalogue.vo_removal`)."""
    with database_errors():
        # Index: requests_by_state_kind_dest_vo (its `state` prefix).
        return await db[REQUESTS].count_documents({"state": {"$in": list(OPEN_STATES)}, "vo": vo}, limit=limit)
