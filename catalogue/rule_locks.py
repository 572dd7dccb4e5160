"""Rule locks: one per rule, file and SE, in `locks` (`_id` `<rule>:<lfn>:<se>`), in state
replicating, ok or stuck.

Only the daemon holding the rule's lease (`catalogue.rules.claim`) changes its locks, so the
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
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import UpdateMany
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue import quotas
from catalogue.directories import DUPLICATE_KEY, now
from catalogue.files import FILES
from catalogue.rule_triggers import RULES
from kernel.db import Document, IndexSpec, bulk_write_chunked, database_errors, increment, read_by_ids
from kernel.errors import ServiceUnavailable

LOCKS = "locks"
LOCK_STATES = ("replicating", "ok", "stuck")

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


async def locks_of(db: AsyncDatabase[Document], rule_id: str, state: str | None = None, *,
                   projection: Mapping[str, int] | None = None) -> list[Document]:
    """A rule's locks (of one state), read with one cursor to its end before the caller writes:
    FerretDB's SQLite backend blocks writers behind an open cursor, and evaluates this filter by
    scanning the collection, so pages would cost one scan each. Index: locks_by_rule_state."""
    query: dict[str, Any] = {"rule": rule_id}
    if state is not None:
        query["state"] = state
    with database_errors():
        return await db[LOCKS].find(query, dict(projection) if projection else None).batch_size(10_000).to_list()


async def list_locks(db: AsyncDatabase[Document], rule_id: str, *, state: str | None = None,
                     after: str | None = None, limit: int = 1000) -> list[Document]:
    """One page of a rule's locks sorted by LFN and SE (`after` is the last `_id` seen)."""
    query: dict[str, Any] = {"rule": rule_id}
    if state:
        query["state"] = state
    if after:
        query["_id"] = {"$gt": after}
    with database_errors():
        # Index: locks_by_rule_lfn.
        return await db[LOCKS].find(query).sort("_id", 1).limit(limit).to_list()


async def recount(db: AsyncDatabase[Document], rule_id: str) -> dict[str, int]:
    """Count the rule's locks by state and set its counters to that (for the lease holder, when
    the counters may have drifted: a daemon killed between changing locks and counting them).
    One cursor over the rule's locks' states. Index: locks_by_rule_state."""
    with database_errors():
        states = Counter(d["state"] for d in await db[LOCKS].find({"rule": rule_id}, {"state": 1, "_id": 0})
                         .batch_size(10_000).to_list())
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


async def insert_locks(db: AsyncDatabase[Document], rule: Document, locks: list[Document]) -> list[Document]:
    """Insert locks (unordered; ids are deterministic, so a lock that exists is skipped), count
    them on the rule and on the account's usage, and protect the replicas of the ok ones."""
    if not locks:
        return []
    duplicates: set[int] = set()
    try:
        with database_errors():
            await db[LOCKS].insert_many(locks, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        duplicates = {e["index"] for e in errors}
    inserted = [lock for i, lock in enumerate(locks) if i not in duplicates]
    counts: dict[str, int] = defaultdict(int)
    usage: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for lock in inserted:
        counts[lock["state"]] += 1
        usage[lock["se"]][0] += 1
        usage[lock["se"]][1] += lock["size"]
    await _count(db, rule["_id"], counts)
    await quotas.charge(db, rule["account"], {se: (f, b) for se, (f, b) in usage.items()})
    await protect(db, [lock for lock in inserted if lock["state"] == "ok"])
    return inserted


async def protect(db: AsyncDatabase[Document], locks: list[Document]) -> None:
    """Put ok locks on their replicas (those not `counted` yet), then mark them `counted`."""
    fresh = [lock for lock in locks if not lock.get("counted")]
    if not fresh:
        return
    await change_replica_locks(db, fresh, add=True)
    with database_errors():
        await db[LOCKS].update_many({"_id": {"$in": [lock["_id"] for lock in fresh]}}, {"$set": {"counted": True}})


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
                    fields: dict[str, Any] | None = None) -> int:
    """Move locks from one state to another (only those still in from_state); counts follow."""
    if not ids:
        return 0
    with database_errors():
        result = await db[LOCKS].update_many({"_id": {"$in": ids}, "state": from_state},
                                             {"$set": {"state": to_state, "modified": now(), **(fields or {})}})
    await _count(db, rule_id, {from_state: -result.modified_count, to_state: result.modified_count})
    return result.modified_count


async def mark(db: AsyncDatabase[Document], ids: list[str], fields: dict[str, Any]) -> None:
    """Set the same fields on many locks (one update)."""
    if ids:
        with database_errors():
            await db[LOCKS].update_many({"_id": {"$in": ids}}, {"$set": fields})


async def remove_locks(db: AsyncDatabase[Document], rule: Document, locks: list[Document]) -> None:
    """Release locks: unprotect their replicas, give the bytes back to the account, delete them."""
    if not locks:
        return
    await unprotect(db, locks)
    with database_errors():
        await db[LOCKS].delete_many({"_id": {"$in": [lock["_id"] for lock in locks]}})
    counts: dict[str, int] = defaultdict(int)
    usage: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for lock in locks:
        counts[lock["state"]] -= 1
        usage[lock["se"]][0] -= 1
        usage[lock["se"]][1] -= lock["size"]
    await _count(db, rule["_id"], counts)
    await quotas.charge(db, rule["account"], {se: (f, b) for se, (f, b) in usage.items()})


LOCK_UPDATE_ATTEMPTS = 10


async def change_replica_locks(db: AsyncDatabase[Document], locks: Iterable[Document], *, add: bool) -> None:
    """Add the locks' rules to (or take them from) their replicas' `lock_rules`, `locks` following.

    Per round: one read of the files (in slices), then one `update_many` per kind of change —
    usually one per SE for a batch of a rule's locks, as `catalogue.replicas.set_replica_statuses`
    does (FerretDB scans for every filter but `_id`, so one write per file would cost more). Each
    write is guarded by every changed replica's SE and `locks` as read: a concurrent change
    (another rule's lock, a shifted array) makes that file miss, and the files are read and
    computed again. A call only adds or only removes, so a changed set always changes its size
    and the count is a sound guard. Bumps `version` (a reaper deciding on the old one reads
    again). Replicas that are gone are skipped. Raises ServiceUnavailable if files keep changing."""
    pending: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for lock in locks:
        pending[lock["lfn"]][lock["se"]].add(rule_of(lock))
    for _ in range(LOCK_UPDATE_ATTEMPTS):
        lfns = sorted(pending)
        groups: dict[tuple[tuple[int, str, Any, tuple[str, ...]], ...], list[str]] = defaultdict(list)
        projection = {"replicas.se": 1, "replicas.locks": 1, "replicas.lock_rules": 1}
        async for doc in read_by_ids(db[FILES], lfns, projection):
            if changes := _lock_changes(doc, pending[doc["_id"]], add):
                groups[changes].append(doc["_id"])
        if not groups:
            return
        updates = [_lock_update(changes, group) for changes, group in groups.items()]
        result = await bulk_write_chunked(db[FILES], updates)
        if result.modified_count == sum(map(len, groups.values())):
            return
        changing = [lfn for group in groups.values() for lfn in group]
        pending = defaultdict(lambda: defaultdict(set), {lfn: pending[lfn] for lfn in changing})
    raise ServiceUnavailable("the replicas of these files kept changing while their rule locks were updated")


def _lock_changes(doc: Document, rules_by_se: Mapping[str, set[str]], add: bool
                  ) -> tuple[tuple[int, str, Any, tuple[str, ...]], ...]:
    """What adding (or removing) rules changes on a file's replicas: (position, SE, `locks` as
    read, new rule set) per replica that changes; () if none does."""
    changes = []
    for i, replica in enumerate(doc.get("replicas", [])):
        rules_here = rules_by_se.get(replica.get("se"))
        if not rules_here:
            continue
        old = set(replica.get("lock_rules") or ())
        new = old | rules_here if add else old - rules_here
        if new != old:
            changes.append((i, replica["se"], replica.get("locks"), tuple(sorted(new))))
    return tuple(changes)


def _lock_update(changes: tuple[tuple[int, str, Any, tuple[str, ...]], ...], lfns: list[str]) -> UpdateMany:
    guard: dict[str, Any] = {"_id": {"$in": lfns}}
    fields: dict[str, Any] = {}
    for i, se, count, new in changes:
        guard[f"replicas.{i}.se"] = se
        guard[f"replicas.{i}.locks"] = count  # None also matches a replica never locked
        fields[f"replicas.{i}.lock_rules"] = list(new)
        fields[f"replicas.{i}.locks"] = len(new)
    return UpdateMany(guard, {"$set": fields, **increment({"version": 1})})


async def replica_lost(db: AsyncDatabase[Document], lfn: str, se: str) -> int:
    """A replica that locks protected was removed anyway (an administrator's override): mark the
    rules holding locks on it for re-evaluation, which puts those locks back to replicating.
    Index: locks_by_lfn_se."""
    with database_errors():
        owners = await db[LOCKS].distinct("rule", {"lfn": lfn, "se": se})
        if not owners:
            return 0
        result = await db[RULES].update_many({"_id": {"$in": sorted(owners)}},
                                             {"$set": {"dirty": True, "due": now()}, **increment({"generation": 1})})
    return result.modified_count


def by_lfn(locks: Iterable[Document]) -> dict[str, list[Document]]:
    out: dict[str, list[Document]] = defaultdict(list)
    for lock in locks:
        out[lock["lfn"]].append(lock)
    return out
