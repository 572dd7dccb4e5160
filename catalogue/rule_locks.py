"""Rule locks: one per rule, file and SE, in `locks` (`_id` `<rule>:<lfn>:<se>`), in state
replicating, ok or stuck.

Only the daemon holding the rule's lease (`catalogue.rules.claim`) changes its locks, so the
rule's counters (`locks_replicating`, `locks_ok`, `locks_stuck`) follow every insert, state
change and removal by the counts the database reports, without re-counting. A daemon killed
between a change and its count leaves them off; the evaluator notices when what it reads
disagrees (and before it calls a rule ok) and sets them from a recount (`recount`).

Protection: an ok lock adds one to its replica's `locks` counter (the reaper's protection
contract, `transfers.deletion`), and takes it back when released. Each change is one `$inc`
per file guarded by the file's `version` read just before and bumping it, so a reaper that
decided on the old version fails its compare-and-set and reads again. `counted` on the lock
records that its replica was incremented. A file whose update missed (its replicas changed
meanwhile) is found by a token the update writes and retried; if a concurrent lock change on
the same file overwrote the token, the retry counts twice — the replica is then kept longer
than needed, never deleted early by an increment.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue import quotas
from catalogue.directories import DUPLICATE_KEY, now
from catalogue.files import FILES
from catalogue.rule_triggers import RULES
from kernel.db import Document, IndexSpec, bulk_write_chunked, database_errors

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
            await db[RULES].update_one({"_id": rule_id}, {"$inc": deltas})


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
    """Count ok locks on their replicas (once each: `counted`)."""
    fresh = [lock for lock in locks if not lock.get("counted")]
    if not fresh:
        return
    await adjust_replica_locks(db, {(lock["lfn"], lock["se"]): 1 for lock in fresh})
    with database_errors():
        await db[LOCKS].update_many({"_id": {"$in": [lock["_id"] for lock in fresh]}}, {"$set": {"counted": True}})


async def unprotect(db: AsyncDatabase[Document], locks: list[Document]) -> None:
    """Take the counts of locks that were counted off their replicas (replicas gone are skipped)."""
    counted = [lock for lock in locks if lock.get("counted")]
    if counted:
        # The lock first: a crash in between leaves the replica counted once too often (kept
        # longer), never a counted lock whose count was taken already (deleted early).
        with database_errors():
            await db[LOCKS].update_many({"_id": {"$in": [lock["_id"] for lock in counted]}},
                                        {"$set": {"counted": False}})
        await adjust_replica_locks(db, {(lock["lfn"], lock["se"]): -1 for lock in counted})


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


async def adjust_replica_locks(db: AsyncDatabase[Document], deltas: Mapping[tuple[str, str], int]) -> None:
    """Add deltas to the `locks` counters of replicas `(lfn, se)`: one read and one bulk write
    per call (the write in slices FerretDB accepts, see `kernel.db.bulk_write_chunked`; plus one read
    and write per retry of missed files). Replicas that are gone are skipped."""
    pending: dict[str, dict[str, int]] = defaultdict(dict)
    for (lfn, se), delta in deltas.items():
        pending[lfn][se] = pending[lfn].get(se, 0) + delta
    for _ in range(5):
        if not pending:
            return
        token = uuid.uuid4().hex
        with database_errors():
            docs = await db[FILES].find({"_id": {"$in": sorted(pending)}}, {"replicas.se": 1, "version": 1}).to_list()
        updates = []
        for doc in docs:
            positions = {r.get("se"): i for i, r in enumerate(doc.get("replicas", []))}
            inc = {f"replicas.{positions[se]}.locks": d for se, d in pending[doc["_id"]].items() if se in positions}
            if inc:
                updates.append(UpdateOne({"_id": doc["_id"], "version": doc.get("version")},
                                         {"$inc": {**inc, "version": 1}, "$set": {"lock_token": token}}))
        if not updates:
            return
        result = await bulk_write_chunked(db[FILES], updates)
        if result.matched_count == len(updates):
            return
        with database_errors():
            marked = await db[FILES].find({"_id": {"$in": sorted(pending)}}, {"lock_token": 1}).to_list()
        done = {d["_id"] for d in marked if d.get("lock_token") == token}
        pending = defaultdict(dict, {lfn: ses for lfn, ses in pending.items() if lfn not in done
                                     and lfn in {d["_id"] for d in docs}})


async def replica_lost(db: AsyncDatabase[Document], lfn: str, se: str) -> int:
    """A replica that locks protected was removed anyway (an administrator's override): mark the
    rules holding locks on it for re-evaluation, which puts those locks back to replicating.
    Index: locks_by_lfn_se."""
    with database_errors():
        owners = await db[LOCKS].distinct("rule", {"lfn": lfn, "se": se})
        if not owners:
            return 0
        result = await db[RULES].update_many({"_id": {"$in": sorted(owners)}},
                                             {"$set": {"dirty": True, "due": now()}, "$inc": {"generation": 1}})
    return result.modified_count


def by_lfn(locks: Iterable[Document]) -> dict[str, list[Document]]:
    out: dict[str, list[Document]] = defaultdict(list)
    for lock in locks:
        out[lock["lfn"]].append(lock)
    return out
