"""Rule locks protect replicas exactly: a replica's `locks` is the size of its `lock_rules`, and
a daemon killed between changing the replica and flagging its lock, then run again, neither
counts a lock twice nor leaves a released lock on the replica."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.files import fetch_files
from catalogue.replica_locks import replica_states
from catalogue.replica_removal import remove_retired, retire_replicas
from kernel.db import Document
from kernel.settings import Settings
from rules import locks as rule_locks
from rules.feed import mark_changed
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


class LockReads(monitoring.CommandListener):
    """The reads a client sends to the locks collection."""

    def __init__(self) -> None:
        self.reads = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "aggregate") and event.command.get(event.command_name) == rule_locks.LOCKS:
            self.reads += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Only a command's start is counted (pymongo's listener needs all three methods)."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """As `succeeded`."""


async def _retire(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    """The reaper's first step on the files' SRC replicas."""
    docs = await fetch_files(db, lfns, {"replicas.se": 1, "version": 1})
    plans = {lfn: (doc["version"], [(i, r["se"]) for i, r in enumerate(doc["replicas"]) if r["se"] == "SRC"])
             for lfn, doc in docs.items()}
    assert await retire_replicas(db, plans) == set(lfns)


async def _rule(db: AsyncDatabase[Document], rule_id: str) -> Document:
    doc = await db["rules"].find_one({"_id": rule_id})
    assert doc is not None
    return doc


async def test_a_lock_that_reaches_its_replica_after_the_reaper_removed_it_copies_the_file_again(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """The reaper removes an unlocked replica just after a rule's evaluation wrote an ok lock on it
    (read available a moment before) and before the lock reached the replica. The removal names no
    rule (none locked the replica), so the lock's protect must see the replica gone: the lock is
    not counted and its rule marked to be evaluated again (which copies the file again)."""
    await _setup(database, tmp_path)
    await database["rules"].insert_one({"_id": "r1", "dirty": False, "generation": 0})
    locks = [_ok_lock("r1", lfn) for lfn in LFNS[:4]]
    await database[rule_locks.LOCKS].insert_many(locks)
    await _retire(database, LFNS[:1])
    assert await remove_retired(database, [(LFNS[0], "SRC")]) == {(LFNS[0], "SRC")}
    await rule_locks.protect(database, locks)
    counted = {lock["lfn"]: lock.get("counted") async for lock in database[rule_locks.LOCKS].find({})}
    assert counted == {LFNS[0]: False, **dict.fromkeys(LFNS[1:4], True)}
    rule = await _rule(database, "r1")
    assert rule["dirty"] is True and rule["generation"] == 1
    assert all([await _protection(database, lfn) == (["r1"], 1) for lfn in LFNS[1:4]])


async def test_the_reapers_removals_tell_the_rules_that_locked_them_without_a_read_of_the_locks(
    database: AsyncDatabase[Document], settings: Settings, mongodb_uri: str, tmp_path: Path,
) -> None:
    """A rule's lock reached a replica the reaper had retired (and then removed): its removal names
    the rule, whose feed marks it; the reaper's other removals (no lock) read nothing. Before, each
    feed batch with removals read every lock on the embedded database (`$in` on `lfn`)."""
    await _setup(database, tmp_path)
    await database["rules"].insert_many([{"_id": r, "dirty": False, "generation": 0} for r in ("r1", "r2")])
    await _retire(database, LFNS[:10])
    locks = [_ok_lock("r1", LFNS[0])]
    await database[rule_locks.LOCKS].insert_many(locks)
    await rule_locks.protect(database, locks)  # on the retired replica: the exact pull reads it again
    before = await change_feed.position(database, "test")
    assert await remove_retired(database, [(lfn, "SRC") for lfn in LFNS[:10]]) == {(lfn, "SRC") for lfn in LFNS[:10]}
    events = await change_feed.read(database, before, 100)
    removed = {e["did"]: e["data"].get("lock_rules") for e in events if e["kind"] == "replica_removed"}
    assert removed == {LFNS[0]: ["r1"], **{lfn: [] for lfn in LFNS[1:10]}}
    listener = LockReads()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[listener], tz_aware=True)
    try:
        await mark_changed(client[settings.database], events)
    finally:
        await client.close()
    assert listener.reads == 0
    assert [(r["_id"], r["dirty"]) async for r in database["rules"].find({}).sort("_id", 1)] == \
        [("r1", True), ("r2", False)]


async def test_a_lock_write_from_a_stale_read_keeps_the_locks_changed_since(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """A change of a replica's `lock_rules` was guarded by the count as read, not the list: after
    rule b's lock was released and d's added (the count back where it was), a write computed from
    the older read (as `rules.progress` hands over records read ahead) stored {b, c}: d's lock no
    longer protected its replica, and b's released lock stayed on it for good."""
    await _setup(database, tmp_path)
    lfn = LFNS[0]

    def lock(rule_id: str) -> Document:
        return {"_id": rule_locks.lock_id(rule_id, lfn, "SRC"), "lfn": lfn, "se": "SRC"}

    await rule_locks.change_replica_locks(database, [lock("b")], add=True)
    read_before = await replica_states(database, [lfn])
    await rule_locks.change_replica_locks(database, [lock("b")], add=False)
    await rule_locks.change_replica_locks(database, [lock("d")], add=True)
    await rule_locks.change_replica_locks(database, [lock("c")], add=True, files=read_before)
    replica = next(r for r in (await fetch_files(database, [lfn]))[lfn]["replicas"] if r["se"] == "SRC")
    assert (sorted(replica["lock_rules"]), replica["locks"]) == (["c", "d"], 2), replica
