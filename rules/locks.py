"""Rule locks: one per rule, file and SE, in `locks` (`_id` `<rule>:<lfn>:<se>`), in state
replicating, ok or stuck.

Only the daemon holding the rule's lease (`rules.store.claim`) changes its locks, so the
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

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue.directories import DUPLICATE_KEY, now
from catalogue.replica_locks import change_lock_rules
from kernel.db import ID_ORDER, Document, IndexSpec, database_errors, increment
from rules import quotas
from rules.triggers import RULES

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


async def change_replica_locks(db: AsyncDatabase[Document], locks: Iterable[Document], *, add: bool,
                               files: Mapping[str, Document] | None = None) -> None:
    """Add the locks' rules to (or take them from) their replicas' `lock_rules`, `locks` following
    (through the catalogue: `catalogue.replica_locks.change_lock_rules`, which computes from
    `files` when the caller just read them with `replica_states`). Replicas that are gone
    are skipped. Raises ServiceUnavailable if files keep changing."""
    rules_by_replica: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for lock in locks:
        rules_by_replica[lock["lfn"]][lock["se"]].add(rule_of(lock))
    if rules_by_replica:
        await change_lock_rules(db, rules_by_replica, add=add, files=files)


async def replicas_lost(db: AsyncDatabase[Document], removed: Iterable[tuple[str, str]]) -> int:
    """Replicas (lfn, se) that were removed: mark the rules holding locks on them for
    re-evaluation, which puts those locks back to replicating. Only an administrator's override
    removes a replica that locks protect; any other removal finds no lock on it, or at most makes
    a rule re-evaluate, which changes nothing. Index: locks_by_lfn_se."""
    wanted = set(removed)
    if not wanted:
        return 0
    with database_errors():
        found = await db[LOCKS].find({"lfn": {"$in": sorted({lfn for lfn, _ in wanted})}},
                                     {"_id": 0, "rule": 1, "lfn": 1, "se": 1}).to_list()
        owners = sorted({lock["rule"] for lock in found if (lock["lfn"], lock["se"]) in wanted})
        if not owners:
            return 0
        result = await db[RULES].update_many({"_id": {"$in": owners}},
                                             {"$set": {"dirty": True, "due": now()}, **increment({"generation": 1})})
    return result.modified_count


def by_lfn(locks: Iterable[Document]) -> dict[str, list[Document]]:
    out: dict[str, list[Document]] = defaultdict(list)
    for lock in locks:
        out[lock["lfn"]].append(lock)
    return out
