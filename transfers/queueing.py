"""Submitting requests to the queue: many in O(1) round trips, an identical open request reused
rather than doubled, and another requester's open one shared with the submitter (joined)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from kernel.db import Document, database_errors, find_by_values, increment, read_by_ids
from kernel.errors import InvalidInput
from transfers.deletion_tags import AUDIT_RUNS, DELETES_REPLICA, TAGGED
from transfers.requests import (
    DEFAULT_MAX_ATTEMPTS,
    JOINED,
    JOINED_SUBMISSIONS,
    JOINS,
    KINDS,
    MAX_PRIORITY,
    OPEN_STATES,
    REQUESTS,
    Kind,
    TransferRequest,
    active_key,
    now,
)
from transfers.turns import take_turns

ENDED_MEANWHILE = "an identical request ended while this one was submitted; submit again"
# An identical open request that ends as a submission joins it (a user's deletion the reaper ends
# as a clean-dark of the same replica is queued) is not this one's: the item is submitted again
# (a new request), up to this many passes in all, before it is answered ENDED_MEANWHILE.
ENDED_PASSES = 3
# Submissions that may join one request (`_join`): each is kept in the owner's request document,
# so a joiner submitting again and again grew it without bound (each join slower than the last).
MAX_JOINED_SUBMISSIONS = 1000
JOINS_FULL = (f"an identical request of another requester has {MAX_JOINED_SUBMISSIONS} submissions joined "
              "already; follow it by one of those, or submit again once it has ended")
_ROOM_TO_JOIN = {f"{JOINED_SUBMISSIONS}.{MAX_JOINED_SUBMISSIONS - 1}": {"$exists": False}}
# The submissions of one requester kept on a request it joined: a user submitting the same
# replication again and again filled the request's 1000 by themselves, and nobody else could join
# it. Past these, a re-submission is answered with the request (its requester follows it by id, or
# by an earlier submission) and its submission is not recorded there.
MAX_SUBMISSIONS_PER_JOINER = 10


def joins_field(requester: str) -> str:
    """The field counting a requester's submissions joined to a request (`JOINS`.<requester>,
    its `.`, `$` and `%` escaped: a field name holds none)."""
    escaped = requester.replace("%", "%25").replace(".", "%2E").replace("$", "%24")
    return f"{JOINS}.{escaped}"


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
    successful: dict[str, str] = {}
    failed: dict[str, str] = {}
    pending = list(items)
    for attempt in range(1, ENDED_PASSES + 1):
        once = await _submit_once(db, kind, pending, requester=requester, activity=activity, priority=priority,
                                  submission=submission, max_attempts=max_attempts, vo=vo)
        successful.update(once["successful"])
        ended = {lfn for lfn, why in once["failed"].items() if why == ENDED_MEANWHILE}
        failed.update({lfn: why for lfn, why in once["failed"].items() if lfn not in ended or attempt == ENDED_PASSES})
        if not ended:
            break
        pending = [item for item in pending if item.get("lfn") in ended]
    return {"submission": submission, "successful": successful, "failed": failed}


async def _submit_once(
    db: AsyncDatabase[Document], kind: Kind, items: Sequence[dict[str, Any]], *, requester: str, activity: str,
    priority: int, submission: str, max_attempts: int, vo: str | None,
) -> dict[str, Any]:
    """One pass of `submit`: {"successful", "failed"} (an item whose identical request ended as
    this one met it fails with ENDED_MEANWHILE, for `submit` to make it again)."""
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
    return {"successful": successful, "failed": failed}


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
    count = joins_field(requester)
    with database_errors():
        result = await db[REQUESTS].update_many(
            {"_id": {"$in": ids}, "state": {"$in": list(OPEN_STATES)}, JOINED_SUBMISSIONS: {"$ne": submission},
             count: {"$not": {"$gte": MAX_SUBMISSIONS_PER_JOINER}}, **_ROOM_TO_JOIN},
            {"$addToSet": {JOINED: requester, JOINED_SUBMISSIONS: submission}, **increment({count: 1})})
    if result.modified_count == len(ids):  # the submission is new: every open one matched was changed
        return set(ids)
    # A submission named again (a production task's) changes nothing where it joined before; a
    # requester with MAX_SUBMISSIONS_PER_JOINER there already has joined it (again, if it withdrew).
    with database_errors():
        await db[REQUESTS].update_many(
            {"_id": {"$in": ids}, "state": {"$in": list(OPEN_STATES)}, count: {"$gte": MAX_SUBMISSIONS_PER_JOINER}},
            {"$addToSet": {JOINED: requester}})
    return await _open_among(db, ids, {"$or": [{JOINED_SUBMISSIONS: submission},
                                               {JOINED: requester, count: {"$gte": MAX_SUBMISSIONS_PER_JOINER}}]})


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
