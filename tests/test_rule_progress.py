"""A rule's progress pass (`rules.progress`): the locks whose replicas became available turn ok
and protect them, the others keep waiting on their requests, and the rule's counters match a
recount, whatever the batch size and with another rule's locks on the same files."""

from __future__ import annotations

from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.replicas import add_replicas, set_replica_statuses
from kernel.db import Document
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import rule_claims, store
from rules.evaluation import evaluate
from rules.progress import progress
from rules.rule_models import RuleIn
from rules.transfer_requests import requester
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, tiered_ses
from transfers import requests as rq

LFNS = [f"/vo/prog/f{i:02d}" for i in range(30)]


async def _replicating_rule(db: AsyncDatabase[Document], settings: Settings, rule_id: str) -> Document:
    """A rule of 2 copies on tier 1, evaluated: every lock replicating, its transfers queued."""
    rule = await store.create_rule(db, ADMIN, RuleIn(did="vo:prog", copies=2, expression="tier=1"),
                                   rule_id=rule_id)
    await evaluate(db, rule, settings.rules)
    await rule_claims.clear_dirty(db, rule_id, 0)
    return await store.get_rule(db, rule_id)


async def _transfers_end(db: AsyncDatabase[Document], rule: Document, lfns: list[str]) -> None:
    """What transfer workers leave for these files: replicas available, then requests done."""
    placed = [(lock["lfn"], lock["se"]) for lock in await rule_locks.locks_of(db, rule["_id"])
              if lock["lfn"] in lfns]
    added = await add_replicas(db, [{"lfn": lfn, "se": se, "status": "copying"} for lfn, se in placed])
    assert not added["failed"], added["failed"]
    for se in {se for _, se in placed}:
        mine = [lfn for lfn, on in placed if on == se]
        found = await fetch_files(db, mine, {"replicas": 1})
        flipped = await set_replica_statuses(
            db, [{"lfn": lfn, "se": se, "status": "available", "expected": "copying"} for lfn in mine], found)
        assert not flipped["failed"], flipped["failed"]
    await db[rq.REQUESTS].update_many({"requester": requester(rule), "lfn": {"$in": lfns}},
                                      {"$set": {"state": "done"}, "$unset": {"active_key": ""}})


async def _lock_rules(db: AsyncDatabase[Document], lfn: str) -> dict[str, list[str]]:
    doc = await db["files"].find_one({"_id": lfn}, {"replicas": 1})
    assert doc is not None
    for replica in doc["replicas"]:
        assert int(replica.get("locks") or 0) == len(replica.get("lock_rules") or [])
    return {r["se"]: sorted(r.get("lock_rules") or []) for r in doc["replicas"] if r.get("lock_rules")}


async def test_a_pass_turns_the_locks_of_available_replicas_ok_and_leaves_the_others_waiting(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path, tier1=2)
    await dataset_on_src(database, "vo:prog", LFNS)
    # "r1" and "r10": one rule's lock ids are not a prefix range of the other's.
    first = await _replicating_rule(database, settings, "r1")
    other = await _replicating_rule(database, settings, "r10")
    arrived = LFNS[:20]
    await _transfers_end(database, first, arrived)
    odd = settings.rules.model_copy(update={"batch": 7})  # batches that a file's two locks could straddle

    assert await progress(database, first, odd) == 40
    done = await store.get_rule(database, "r1")
    assert rule_locks.counters_of(done) == {"replicating": 20, "ok": 40, "stuck": 0}
    assert rule_locks.counters_of(done) == await rule_locks.recount(database, "r1")
    ok = await rule_locks.locks_of(database, "r1", "ok")
    assert sorted({lock["lfn"] for lock in ok}) == arrived and all(lock["counted"] for lock in ok)
    assert all([await _lock_rules(database, lfn) == {"T1-A": ["r1"], "T1-B": ["r1"]} for lfn in arrived])
    assert all([await _lock_rules(database, lfn) == {} for lfn in LFNS[20:]])
    # The waiting locks kept their open requests: none was submitted again.
    assert await database[rq.REQUESTS].count_documents({"requester": requester(first)}) == 60
    # The other rule's locks on the same replicas are not its to move, until its own pass.
    assert rule_locks.counters_of(await store.get_rule(database, "r10"))["ok"] == 0
    assert await progress(database, other, settings.rules) == 40
    assert all([await _lock_rules(database, lfn) == {"T1-A": ["r1", "r10"], "T1-B": ["r1", "r10"]}
                for lfn in arrived])


async def test_a_lock_whose_transfer_ended_without_its_replica_asks_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path, tier1=2)
    await dataset_on_src(database, "vo:prog", LFNS[:4])
    rule = await _replicating_rule(database, settings, "r2")
    await _transfers_end(database, rule, LFNS[:2])
    # The other two files' requests end done, but their replicas never arrived (removed since).
    await database[rq.REQUESTS].update_many({"requester": requester(rule), "lfn": {"$in": LFNS[2:4]}},
                                            {"$set": {"state": "done"}, "$unset": {"active_key": ""}})

    assert await progress(database, rule, settings.rules) == 4 + 4
    assert rule_locks.counters_of(await store.get_rule(database, "r2")) == {"replicating": 4, "ok": 4, "stuck": 0}
    asked = await database[rq.REQUESTS].count_documents({"requester": requester(rule), "state": "queued"})
    assert asked == 4
