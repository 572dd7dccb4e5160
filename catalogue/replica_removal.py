"""Retiring and removing replicas in bulk, for the reaper: a few bulk writes per batch, each
step guarded and idempotent, so that a process killed anywhere and a successor repeating the
call never count a removal twice nor lose one.

`retire_replicas`: the replicas a caller decided to delete become `unavailable` (and get their
removal token, below), each file's update guarded by the `version` the decision was taken on
(one update per file, one bulk write).

`remove_retired`: a retired replica leaves its file and its SE's usage in four steps:
1. it has a removal token (`removal`), given when it was retired, or now if it was retired
   otherwise: one bulk write for those;
2. its SE's usage loses it once per token (`catalogue.usage.count_removals`: one update per SE
   record, guarded by the tokens it has already taken and by the SE's removal fence, read before
   the tokens of step 1);
3. it is pulled from its file, token and all (an exact `$pull`): one bulk write;
4. the tokens leave the usage records (`forget_removals`).
A replica changed between 1 and 3 (made available again) is not pulled: what step 2 took is given
back by its token. A successor finds the token on the replica and repeats 2-4; step 2's guard
makes the repeat count nothing. A process that stalled and resumed after its successor finished
step 4 (the token gone from the usage record, so that guard would pass again) is refused by the
fence: step 4, and any giving back, moves it, and a count must find it where it was before its
tokens were read; it then reads the fence and the tokens again, and finds its replicas gone.
Counts that meet another batch's step 4 on the same SE read again too (`COUNT_ATTEMPTS`, with a
short random pause). Step 2 also begins with `kernel.lease.check_held()`, which stops work (run
under a lease) whose lease this process has not renewed for three quarters of its length.

The removal token is also the mark of a replica being deleted: a writer never takes it over
(`being_removed`; `catalogue.replicas.copying_again`), since the deleter may still delete the bytes
at its path, new ones included. A mark older than REMOVAL_HORIZON_S no longer holds a writer off:
its deletion was abandoned (failed for good, or its eviction died), and no live one lasts that long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.collection_names import FILES
from catalogue.directories import find_by_ids, now
from catalogue.usage import count_removals, forget_removals, removal_fences, uncount_removals
from kernel.db import Document, bulk_write_chunked, increment
from kernel.errors import Conflict, ServiceUnavailable

REMOVAL = "removal"
REMOVAL_HORIZON_S = 6 * 3600.0  # see the module docstring
COUNT_ATTEMPTS = 20  # reads of the fences and tokens before a count gives up (`remove_retired`)
Target = tuple[str, str]  # (lfn, se)
Positions = dict[Target, tuple[int, Document]]  # a replica as read, with its position in its file


class ReplicaBeingRemoved(Conflict):
    """A writer asked for a replica that a deletion has retired and may still be deleting."""

    code = "replica_being_removed"


def being_removed(replica: Mapping[str, Any], at: dt.datetime) -> bool:
    """Is a deletion (still) at work on this replica (retired with a removal token lately)?"""
    retired_at = replica.get("modified")
    if not replica.get(REMOVAL) or replica.get("status") != "unavailable":
        return False
    if isinstance(retired_at, dt.datetime) and retired_at.tzinfo is None:
        retired_at = retired_at.replace(tzinfo=dt.UTC)  # as a client without tz_aware reads it
    return not isinstance(retired_at, dt.datetime) or (at - retired_at).total_seconds() < REMOVAL_HORIZON_S


async def retire_replicas(db: AsyncDatabase[Document], plans: Mapping[str, tuple[Any, Sequence[tuple[int, str]]]],
                          *, guids: Mapping[str, str | None] | None = None,
                          tokens: Mapping[Target, str] | None = None) -> set[str]:
    """Make replicas `unavailable` ahead of their deletion: `plans` is `{lfn: (version, [(index,
    se), ...])}`, the positions as read with that `version`. One bulk write, each file's update
    guarded by its version and the positions' SEs (and bumping the version, so that a decision
    taken on the file's replicas by anyone else is invalidated), and by the file's GUID as read
    where `guids` has it (a file removed and registered again at the LFN may have the version and
    replicas of the one decided on). A replica retired before keeps its removal token (`tokens`,
    by `(lfn, se)`: a count may have taken it) and has its mark renewed (`being_removed`).
    Returns the LFNs retired; the others changed meanwhile, and their caller decides again on a
    fresh read."""
    if not plans:
        return set()
    at = now()
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored (BSON keeps milliseconds)
    updates = []
    for lfn, (version, positions) in plans.items():
        guard: dict[str, Any] = {f"replicas.{index}.se": se for index, se in positions}
        if (guids or {}).get(lfn):
            guard["guid"] = (guids or {})[lfn]
        # The removal token is given here too, saving `remove_retired` a write per replica.
        change = {f"replicas.{index}.{field}": value for index, se in positions
                  for field, value in (("status", "unavailable"), ("modified", at),
                                       (REMOVAL, (tokens or {}).get((lfn, se)) or uuid.uuid4().hex))}
        updates.append(UpdateOne({"_id": lfn, "version": version, **guard},
                                 {"$set": {**change, "modified": at}, **increment({"version": 1})}))
    result = await bulk_write_chunked(db[FILES], updates)
    retired = set(plans)
    if result.modified_count < len(updates):  # the files written carry this call's time
        now_files = await find_by_ids(db[FILES], plans, {"modified": 1})
        retired = {lfn for lfn in plans if now_files.get(lfn, {}).get("modified") == at}
    await change_feed.append(db, [change_feed.event("replica_status", lfn, se=se, status="unavailable")
                                  for lfn in sorted(retired) for _, se in plans[lfn][1]])
    return retired


def _retired(found: Mapping[str, Document], targets: Iterable[Target]) -> dict[Target, tuple[int, Document]]:
    """The targets' replicas that are retired now, with their position."""
    out = {}
    for lfn, se in targets:
        for index, replica in enumerate(found.get(lfn, {}).get("replicas", [])):
            if replica.get("se") == se and replica.get("status") == "unavailable":
                out[(lfn, se)] = (index, replica)
    return out


async def _tokens(db: AsyncDatabase[Document], targets: set[Target]) -> tuple[Positions, dict[str, int]]:
    """Step 1: each retired target's replica, with its position and its removal token (given
    now, or kept from a removal cut short), and the files' sizes."""
    projection = {"replicas": 1, "size": 1}
    found = await find_by_ids(db[FILES], {lfn for lfn, _ in targets}, projection)
    marks = []
    for (lfn, se), (index, replica) in _retired(found, targets).items():
        if not replica.get(REMOVAL):
            marks.append(UpdateOne({"_id": lfn, f"replicas.{index}.se": se, f"replicas.{index}.status": "unavailable",
                                    f"replicas.{index}.{REMOVAL}": None},
                                   {"$set": {f"replicas.{index}.{REMOVAL}": uuid.uuid4().hex}}))
    if marks:
        await bulk_write_chunked(db[FILES], marks)
        found = await find_by_ids(db[FILES], found, projection)  # the tokens as stored, whoever set them
    marked = {target: place for target, place in _retired(found, targets).items() if place[1].get(REMOVAL)}
    return marked, {lfn: int(doc.get("size", 0)) for lfn, doc in found.items()}


def _by_se(replicas: Positions, sizes: Mapping[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for (lfn, se), (_, replica) in replicas.items():
        out[se][replica[REMOVAL]] = sizes.get(lfn, 0)
    return out


async def _pull(db: AsyncDatabase[Document], marked: Positions) -> tuple[set[Target], Positions, Positions]:
    """Step 3: pull each replica exactly as read (the filter pins the element at its position, so
    an update that matches is a pull that took); returns the targets gone, those known to have
    gone exactly as read (a round whose every pull took), and those that changed (made available
    again, or still changing after a few reads)."""
    gone: set[Target] = set()
    changed: Positions = {}
    pending = dict(marked)
    for _ in range(5):
        at = now()
        pulls = [UpdateOne({"_id": lfn, f"replicas.{index}": replica},
                           {"$pull": {"replicas": replica}, "$set": {"modified": at}, **increment({"version": 1})})
                 for (lfn, _), (index, replica) in pending.items()]
        result = await bulk_write_chunked(db[FILES], pulls)
        if result.modified_count == len(pulls):
            return gone | set(pending), pending, changed
        after = await find_by_ids(db[FILES], {lfn for lfn, _ in pending}, {"replicas": 1})
        left: Positions = {}
        for (lfn, se), (_, replica) in pending.items():
            now_at = [(i, r) for i, r in enumerate(after.get(lfn, {}).get("replicas", []))
                      if r.get(REMOVAL) == replica[REMOVAL]]
            if not now_at:
                gone.add((lfn, se))
            elif now_at[0][1].get("status") == "unavailable":
                left[(lfn, se)] = now_at[0]
            else:
                changed[(lfn, se)] = (now_at[0][0], replica)
        pending = left
        if not pending:
            break
    return gone, {}, {**changed, **pending}


async def remove_retired(db: AsyncDatabase[Document], targets: Iterable[Target]) -> set[Target]:
    """Remove retired (`unavailable`) replicas `(lfn, se)` from their files and their SEs' usage
    (the module docstring's four steps; O(1) round trips per batch). Returns the targets
    removed, now or by an earlier attempt cut short after its pull; a target whose replica is
    not retired is left alone."""
    wanted = set(targets)
    for attempt in range(COUNT_ATTEMPTS):
        fences = await removal_fences(db, {se for _, se in wanted})  # before the tokens (`count_removals`)
        marked, sizes = await _tokens(db, wanted)
        if not marked:
            return set()
        if await count_removals(db, _by_se(marked, sizes), fences):
            break
        await asyncio.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # other removals on these SEs ended meanwhile
    else:
        raise ServiceUnavailable(f"removals on SE(s) {', '.join(sorted({se for _, se in wanted}))} kept ending "
                                 f"while these were counted ({COUNT_ATTEMPTS} tries); try again")
    gone, exact, changed = await _pull(db, marked)
    await uncount_removals(db, _by_se(changed, sizes))
    await forget_removals(db, {se: list(names) for se, names in _by_se(
        {t: marked[t] for t in gone}, sizes).items()})
    await change_feed.append(db, [_removed(lfn, se, exact.get((lfn, se))) for lfn, se in sorted(gone)])
    return gone


def _removed(lfn: str, se: str, place: tuple[int, Document] | None) -> change_feed.Event:
    """A removal's event: with the rules that locked the replica (`lock_rules`) when it is known
    to have gone exactly as read, so that the rules' feed marks those, and reads no lock for
    the others (`rules.feed`)."""
    if place is None:
        return change_feed.event("replica_removed", lfn, se=se)
    return change_feed.event("replica_removed", lfn, se=se, lock_rules=sorted(place[1].get("lock_rules") or ()))
