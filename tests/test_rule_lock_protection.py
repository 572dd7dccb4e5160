"""Rule locks protect replicas exactly: a replica's `locks` is the size of its `lock_rules`, and
a daemon killed between changing the replica and flagging its lock, then run again, neither
counts a lock twice nor leaves a released lock on the replica."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from rules import locks as rule_locks
from tests.fixtures.rules import dataset_on_src, tiered_ses

LFNS = [f"/vo/prot/f{i}" for i in range(20)]


async def _setup(db: AsyncDatabase[Document], tmp_path: Path) -> None:
    await tiered_ses(db, tmp_path, tier1=1)
    await dataset_on_src(db, "vo:prot", LFNS)


def _ok_lock(rule_id: str, lfn: str) -> Document:
    return rule_locks.new_lock({"_id": rule_id, "account": "admin"}, lfn, "SRC", 256, "ok")


async def _protection(db: AsyncDatabase[Document], lfn: str) -> tuple[list[str], int]:
    doc = await db["files"].find_one({"_id": lfn}, {"replicas": 1})
    assert doc is not None
    replica = next(r for r in doc["replicas"] if r["se"] == "SRC")
    return list(replica.get("lock_rules") or []), int(replica.get("locks") or 0)


async def test_protecting_again_after_a_kill_before_the_lock_was_flagged_counts_once(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await _setup(database, tmp_path)
    locks = [_ok_lock("r1", lfn) for lfn in LFNS]
    await database[rule_locks.LOCKS].insert_many(locks)
    await rule_locks.change_replica_locks(database, locks, add=True)  # killed here: `counted` never set
    await rule_locks.protect(database, locks)  # the next pass finds them uncounted
    assert all([await _protection(database, lfn) == (["r1"], 1) for lfn in LFNS])
    assert await database[rule_locks.LOCKS].count_documents({"counted": True}) == len(LFNS)


async def test_releasing_again_after_a_kill_takes_every_lock_off_its_replica(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await _setup(database, tmp_path)
    mine, other = [_ok_lock("r1", lfn) for lfn in LFNS], [_ok_lock("r2", lfn) for lfn in LFNS]
    await database[rule_locks.LOCKS].insert_many(mine + other)
    await rule_locks.protect(database, mine + other)
    # An earlier release cleared the flags and was killed before the replicas changed.
    await database[rule_locks.LOCKS].update_many({"rule": "r1"}, {"$set": {"counted": False}})
    await rule_locks.unprotect(database, [{**lock, "counted": False} for lock in mine])
    assert all([await _protection(database, lfn) == (["r2"], 1) for lfn in LFNS])
    await rule_locks.unprotect(database, mine)  # and again: nothing more is taken off
    assert all([await _protection(database, lfn) == (["r2"], 1) for lfn in LFNS])


async def test_many_rules_locking_the_same_replicas_at_once_are_each_counted_once(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await _setup(database, tmp_path)
    rules = [f"r{i}" for i in range(8)]
    per_rule = [[_ok_lock(rule, lfn) for lfn in LFNS] for rule in rules]
    await database[rule_locks.LOCKS].insert_many([lock for locks in per_rule for lock in locks])
    # Concurrent compare-and-sets on the same files: the losers read again and recompute.
    await asyncio.gather(*(rule_locks.protect(database, locks) for locks in per_rule))
    assert all([await _protection(database, lfn) == (sorted(rules), len(rules)) for lfn in LFNS])
    await asyncio.gather(*(rule_locks.unprotect(database, locks) for locks in per_rule[:5]))
    assert all([await _protection(database, lfn) == (sorted(rules[5:]), 3) for lfn in LFNS])
