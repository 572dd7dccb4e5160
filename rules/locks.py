"""Rule locks: one per rule, file and SE, in `locks` (`_id` `<rule>:<lfn>:<se>`), in state
replicating, ok or stuck.

Only the daemon holding the rule's lease (`rules.rule_claims.claim`) changes its locks, so the
rule's counters (`locks_replicating`, `locks_ok`, `locks_stuck`) follow every insert, state
change and removal by the counts the database reports, without re-counting. A daemon killed
between a change and its count leaves them off; the evaluator notices when what it reads
disagrees (and before it calls a rule ok) and sets them from a recount (`recount`).

Protection: an ok lock puts its rule's id in its replica's `lock_rules` (a rule has at most
one lock per file and SE), and `locks` is set to the size of that set — the reaper's protection
contract, `transfers.deletion`; releasing the lock takes the id out. Each change is a `$set` of
both computed from the file as read just before, guarded by what was read and bumping the file's
`version` (see `change_replica_locks`): a concurrent change makes it miss, and it is computed
again from a fresh read. Adding or removing an id is idempotent, so a daemon killed
anywhere and run again leaves `locks` exact: never a count the set does not back. `counted` on
a lock records that its id is in the replica's set (only a hint of work left to do).

Quota usage (`rules.quotas`): a lock's bytes are charged to its rule's account before the lock
is written (where the account has a quota, only while it has room: `quotas.reserve`; the locks
it has no room for are not written) and given back before it is deleted. Each call notes itself
on the usage records it changes, in the same update, and takes the note off when done; the
rule's next lease holder settles the note of a call killed in between (`rules.quota_notes`), so
a call cut short leaves the usage exact. An insert charges every lock it is given and gives back
those that existed already (deterministic ids: the unique `_id` lets one caller win), so
concurrent inserts, and a retry of an insert the database wrote before it failed, charge each
lock once. A release gives back only what it marked: it marks the locks no other live call is
releasing (`releasing`, a `kernel.marks.Mark` with lease RELEASE_LEASE), reads back those
carrying its mark, gives them back, deletes them by its mark and counts what it deleted on the
rule, so two calls releasing the same locks (a stalled lease holder and its successor, a retry
of a call that timed out) give each back once; a lapsed mark (a call that died between marking
and giving back) is taken over. Cost: one more read per batch.

A lease holder that stalled past its lease (`kernel.lease.check_held`) writes no lock and puts
none on a replica: its successor (the cleaner of a rule deleted meanwhile) may have released the
rule's locks and removed it, and a lock written after that would protect its replica and charge
the account for good, with no rule left to release it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue.directories import DUPLICATE_KEY, now
from catalogue.replica_locks import change_lock_rules
from kernel import lease
from kernel.db import ID_ORDER, Document, IndexSpec, database_errors, increment, read_by_ids
from kernel.marks import Mark, by_ids
from rules import quotas
from rules.triggers import RULES

LOCKS = "locks"
LOCK_STATES = ("replicating", "ok", "stuck")
RELEASING = "releasing"  # a lock's mark while one call releases it: {token, at}
RELEASE_LEASE = dt.timedelta(minutes=2)
CHARGED_BY = "charged_by"  # on a lock: the token of the insert that charged it (`rules.quota_notes`)
log = logging.getLogger("cairn.rules")

INDEXES = [
    # a rule's locks by state (progress, repair, rule show)
    IndexSpec(LOCKS, [("rule", 1), ("state", 1), ("_id", 1)], name="locks_by_rule_state"),
    # a rule's locks by file (listing, evaluation), and every lock on a file
    IndexSpec(LOCKS, [("rule", 1), ("lfn", 1)], name="locks_by_rule_lfn"),
    IndexSpec(LOCKS, [("lfn", 1), ("se", 1)], name="locks_by_lfn_se"),
]


def lock_id(rule_id: str, lfn: str, se: str) -> str:
    return f"{rule_id}:{lfn}:{se}"


def rule_of(lock: Document) -> str:
    """The rule a lock belongs to, from its `_id` (rule ids hold no ':'), whatever was projected."""
    return str(lock["_id"]).split(":", 1)[0]


def new_lock(rule: Document, lfn: str, se: str, size: int, state: str, **extra: Any) -> Document:
    at = now()
    return {"_id": lock_id(rule["_id"], lfn, se), "rule": rule["_id"], "lfn": lfn, "se": se, "size": size,
            "state": state, "account": rule["account"], "request": None, "counted": False, "error": None,
            "created": at, "modified": at, **extra}


def _of_rule(rule_id: str, state: str | None = None) -> Document:
    """The filter of a rule's locks (of one state): by rule and state, and by the `_id` range its
    lock ids share (`<rule>:` up to `<rule>;`; rule ids hold no ':'), which Cairn's FerretDB build
    reads from the `_id` index under the ID_ORDER comment instead of scanning every rule's locks.
    Index: locks_by_rule_state (rule, state, _id) on MongoDB."""
    query: dict[str, Any] = {"rule": rule_id}
    if state is not None:
        query["state"] = state
    return {"$and": [query, {"_id": {"$gt": f"{rule_id}:", "$lt": f"{rule_id};"}}]}


async def locks_of(db: AsyncDatabase[Document], rule_id: str, state: str | None = None, *,
                   projection: Mapping[str, int] | None = None) -> list[Document]:
    """A rule's locks (of one state), read with one cursor to its end before the caller writes
    (FerretDB's SQLite backend blocks writers behind an open cursor). Index: see `_of_rule`."""
    with database_errors():
        return await db[LOCKS].find(_of_rule(rule_id, state), dict(projection) if projection else None,
                                    comment=ID_ORDER).batch_size(10_000).to_list()


async def list_locks(db: AsyncDatabase[Document], rule_id: str, *, state: str | None = None,
                     after: str | None = None, limit: int = 1000) -> list[Document]:
    """One page of a rule's locks sorted by LFN and SE (`after` is the last `_id` seen), without
    a release's mark (bookkeeping no reader is shown)."""
    query: dict[str, Any] = {"rule": rule_id}
    if state:
        query["state"] = state
    if after:
        query["_id"] = {"$gt": after}
    with database_errors():
        # Index: locks_by_rule_lfn.
        return await db[LOCKS].find(query, {RELEASING: 0, CHARGED_BY: 0}).sort("_id", 1).limit(limit).to_list()


async def recount(db: AsyncDatabase[Document], rule_id: str) -> dict[str, int]:
    """Count the rule's locks by state and set its counters to that (for the lease holder, when
    the counters may have drifted: a daemon killed between changing locks and counting them).
    One cursor over the rule's locks' states. Index: see `_of_rule`."""
    with database_errors():
        states = Counter(d["state"] for d in await db[LOCKS].find(_of_rule(rule_id), {"state": 1, "_id": 0},
                                                                  comment=ID_ORDER).batch_size(10_000).to_list())
        counts = {state: states.get(state, 0) for state in LOCK_STATES}
        await db[RULES].update_one({"_id": rule_id}, {"$set": {f"locks_{s}": n for s, n in counts.items()}})
    return counts


def counters_of(rule: Document) -> dict[str, int]:
    return {state: int(rule.get(f"locks_{state}", 0)) for state in LOCK_STATES}


async def _count(db: AsyncDatabase[Document], rule_id: str, inc: Mapping[str, int]) -> None:
    deltas = {f"locks_{state}": n for state, n in inc.items() if n}
    if deltas:
        with database_errors():
            await db[RULES].update_one({"_id": rule_id}, increment(deltas))


async def insert_locks(db: AsyncDatabase[Document], rule: Document, locks: list[Document], *,
                       refused: list[Document] | None = None) -> list[Document]:
    """Charge the account for locks, insert them (unordered; ids are deterministic, so a lock that
    exists is skipped and its charge given back), count them on the rule, and protect the replicas
    of the ok ones. Locks on an SE where the account's quota has no room for them now
    (`quotas.reserve`) are not written: they go to `refused` when given. A holder whose lease may
    have run out writes nothing (LeaseLost, see the module docstring). The charge is noted on the
    usage records and the note settled after the insert (`rules.quota_notes`): the locks written
    carry the call's token in CHARGED_BY."""
    if not locks:
        return []
    token = uuid.uuid4().hex
    for lock in locks:
        lock[CHARGED_BY] = token
    lease.check_held()
    short = await quotas.reserve(db, rule["account"], _held(locks, +1), rule.get("vo"),
                                 noted=noted(rule, token, +1, locks))
    if short:
        for lock in locks:
            if lock["se"] in short:
                del lock[CHARGED_BY]
                if refused is not None:
                    refused.append(lock)
        locks = [lock for lock in locks if lock["se"] not in short]
    if not locks:
        return []
    duplicates: set[int] = set()
    lease.check_held()  # a stall since the charge: the successor may have settled its note already
    try:
        with database_errors():
            await db[LOCKS].insert_many(locks, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        duplicates = {e["index"] for e in errors}
    back = dict.fromkeys({lock["se"] for lock in locks}, (0, 0))
    await quotas.charge(db, rule["account"], {**back, **_held([locks[i] for i in sorted(duplicates)], -1)},
                        settles=token)
    inserted = [lock for i, lock in enumerate(locks) if i not in duplicates]
    await _count(db, rule["_id"], Counter(lock["state"] for lock in inserted))
    await protect(db, [lock for lock in inserted if lock["state"] == "ok"])
    return inserted


def noted(rule: Document, token: str, sign: int, locks: Iterable[Document]) -> quotas.Noted:
    """A call's notes on the usage records of the locks' SEs (`rules.quota_notes`): the rule, the
    sign (+1 a charge, -1 a give-back), and each SE's locks with their sizes (in `sizes`)."""
    at = now()
    by_se: dict[str, Document] = defaultdict(lambda: {"rule": rule["_id"], "at": at, "sign": sign, "locks": [],
                                                      "sizes": []})
    for lock in locks:  # (two lists: FerretDB 1.24 stores no array in an array)
        by_se[lock["se"]]["locks"].append(lock["_id"])
        by_se[lock["se"]]["sizes"].append(int(lock["size"]))
    return quotas.Noted(token, dict(by_se))


def _held(locks: Iterable[Document], sign: int) -> dict[str, tuple[int, int]]:
    """(files, bytes) per SE that locks hold, signed: what they charge (+1) or give back (-1)."""
    usage: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for lock in locks:
        usage[lock["se"]][0] += sign
        usage[lock["se"]][1] += sign * int(lock["size"])
    return {se: (files, size) for se, (files, size) in usage.items()}


async def protect(db: AsyncDatabase[Document], locks: list[Document]) -> None:
    """Put ok locks on their replicas (those not `counted` yet), then mark them `counted`. A lock
    whose replica is gone is not counted and its rule is marked for re-evaluation (which copies
    the file again): the replica's removal came before the lock reached it, so it told no rule
    (`rules.feed`)."""
    fresh = [lock for lock in locks if not lock.get("counted")]
    if not fresh:
        return
    gone = await change_replica_locks(db, fresh, add=True)
    counted = [lock["_id"] for lock in fresh if (lock["lfn"], lock["se"]) not in gone]
    if counted:
        with database_errors():
            await db[LOCKS].update_many({"_id": {"$in": counted}}, {"$set": {"counted": True}})
    await make_dirty(db, {rule_of(lock) for lock in fresh if (lock["lfn"], lock["se"]) in gone})


async def unprotect(db: AsyncDatabase[Document], locks: list[Document]) -> None:
    """Take locks off their replicas (replicas gone are skipped), then mark them not `counted`.

    Every lock given is taken off, counted or not: a daemon killed after an earlier call cleared
    the flag but before the replica changed would otherwise leave the replica locked for good."""
    if locks:
        await change_replica_locks(db, locks, add=False)
        with database_errors():
            await db[LOCKS].update_many({"_id": {"$in": [lock["_id"] for lock in locks]}},
                                        {"$set": {"counted": False}})


async def set_state(db: AsyncDatabase[Document], rule_id: str, ids: list[str], from_state: str, to_state: str,
                    fields: dict[str, Any] | None = None, *, tally: Counter[str] | None = None) -> int:
    """Move locks from one state to another (only those still in from_state); counts follow, on
    the rule at once, or into `tally` for the caller to count once for many calls (`count`)."""
    if not ids:
        return 0
    with database_errors():
        result = await db[LOCKS].update_many({"_id": {"$in": ids}, "state": from_state},
                                             {"$set": {"state": to_state, "modified": now(), **(fields or {})}})
    changes = {from_state: -result.modified_count, to_state: result.modified_count}
    if tally is None:
        await _count(db, rule_id, changes)
    else:
        tally.update(changes)
    return result.modified_count


async def count(db: AsyncDatabase[Document], rule_id: str, tally: Counter[str]) -> None:
    """Add the changes `set_state` gathered in `tally` to the rule's counters (one update), and
    empty it. A daemon killed before this leaves the counters off, which the next pass notices
    (`recount`)."""
    await _count(db, rule_id, tally)
    tally.clear()


async def mark(db: AsyncDatabase[Document], ids: list[str], fields: dict[str, Any]) -> None:
    """Set the same fields on many locks (one update)."""
    if ids:
        with database_errors():
            await db[LOCKS].update_many({"_id": {"$in": ids}}, {"$set": fields})


async def remove_locks(db: AsyncDatabase[Document], rule: Document, locks: list[Document]) -> int:
    """Release the locks no other live call is releasing: take them off their replicas, give their
    bytes back to the account with the call's note, delete them, uncount them on the rule and take
    the note off (see the module docstring and `rules.quota_notes`). Returns how many this call
    released."""
    if not locks:
        return 0
    mark = Mark(RELEASING, RELEASE_LEASE)
    mine = await _mark_for_release(db, [lock["_id"] for lock in locks], mark)
    if not mine:
        return 0
    given = False
    try:
        await change_replica_locks(db, mine, add=False)
        lease.check_held()  # a stall since the marks: the successor releases them
        given = True  # from here the note (once written) settles what is left: the marks stay
        await quotas.charge(db, rule["account"], _held(mine, -1), noted=noted(rule, mark.token, -1, mine))
        released = await _delete_marked(db, mine, mark)
    except BaseException:
        if not given:
            await asyncio.shield(mark.take_off(db[LOCKS], [lock["_id"] for lock in mine]))
        raise
    await _count(db, rule["_id"], {state: -n for state, n in Counter(lock["state"] for lock in released).items()})
    await quotas.charge(db, rule["account"], dict.fromkeys({lock["se"] for lock in mine}, (0, 0)), settles=mark.token)
    return len(released)


async def _mark_for_release(db: AsyncDatabase[Document], ids: list[str], mark: Mark) -> list[Document]:
    """Mark the locks of ids that no live call marked and read back those carrying this mark.
    Marking clears `counted`: their replicas change next."""
    with database_errors():
        for flt in by_ids(ids, mark.free()):
            await db[LOCKS].update_many(flt, {"$set": {RELEASING: mark.value(), "counted": False}})
    return [lock async for lock in read_by_ids(db[LOCKS], ids, {"lfn": 1, "se": 1, "size": 1, "state": 1},
                                                  flt=mark.mine())]


async def _delete_marked(db: AsyncDatabase[Document], mine: list[Document], mark: Mark) -> list[Document]:
    """Delete the locks this call marked, by its mark; the ones to count (all, or none when a
    call that took over a lapsed mark deleted some of them first)."""
    deleted = await mark.delete(db[LOCKS], [lock["_id"] for lock in mine], "releasing the locks")
    if deleted == len(mine):
        return mine
    log.warning("a release deleted %d of the %d locks it marked (another call took the rest over): it cannot "
                "tell which and counts none on the rule (its next pass recounts)", deleted, len(mine))
    return []


async def change_replica_locks(db: AsyncDatabase[Document], locks: Iterable[Document], *, add: bool,
                               files: Mapping[str, Document] | None = None) -> set[tuple[str, str]]:
    """Add the locks' rules to (or take them from) their replicas' `lock_rules`, `locks` following
    (through the catalogue: `catalogue.replica_locks.change_lock_rules`, which computes from
    `files` when the caller just read them with `replica_states`). Replicas that are gone
    are skipped and returned as `(lfn, se)`. Raises ServiceUnavailable if files keep changing."""
    if add:
        lease.check_held()  # see the module docstring
    rules_by_replica: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for lock in locks:
        rules_by_replica[lock["lfn"]][lock["se"]].add(rule_of(lock))
    if not rules_by_replica:
        return set()
    return await change_lock_rules(db, rules_by_replica, add=add, files=files)


async def replicas_lost(db: AsyncDatabase[Document], removed: Iterable[tuple[str, str]]) -> int:
    """Replicas (lfn, se) that were removed or found lost, when what locked them is not known:
    mark the rules holding locks on them for re-evaluation, which puts those locks back to
    replicating. Only an administrator's override removes a replica that locks protect; any other
    removal finds no lock on it, or at most makes a rule re-evaluate, which changes nothing.
    Index: locks_by_lfn_se (not made on the embedded database: a read of every lock there, which
    the reaper's removals spare by telling the rules that locked what they removed)."""
    wanted = set(removed)
    if not wanted:
        return 0
    with database_errors():
        found = await db[LOCKS].find({"lfn": {"$in": sorted({lfn for lfn, _ in wanted})}},
                                     {"_id": 0, "rule": 1, "lfn": 1, "se": 1}).to_list()
    return await make_dirty(db, {lock["rule"] for lock in found if (lock["lfn"], lock["se"]) in wanted})


async def make_dirty(db: AsyncDatabase[Document], rule_ids: Iterable[str]) -> int:
    """Mark rules for re-evaluation now (a replica of theirs went); returns how many were marked."""
    owners = sorted(set(rule_ids))
    if not owners:
        return 0
    with database_errors():
        result = await db[RULES].update_many({"_id": {"$in": owners}},
                                             {"$set": {"dirty": True, "due": now()}, **increment({"generation": 1})})
    return result.modified_count


def by_lfn(locks: Iterable[Document]) -> dict[str, list[Document]]:
    out: dict[str, list[Document]] = defaultdict(list)
    for lock in locks:
        out[lock["lfn"]].append(lock)
    return out
