"""Rules end to end with real transfer workers on local disk SEs: a rule on a dataset ends ok
with every file on its SEs; content added later follows; failures are repaired; expiry frees."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import remove_files
from catalogue.replicas import add_replicas
from catalogue.storage_elements import StorageElementUpdate, update_storage_element
from kernel.db import Document
from kernel.settings import Settings
from rules import feed, locks, quotas, rule_edits, store
from rules.cleaner import RuleCleaner
from rules.evaluator import RuleEvaluator
from rules.rule_models import RuleIn, RuleUpdate
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import (
    dataset_on_src,
    replicas_by_file,
    rule_daemons,
    rule_settings,
    rule_state,
    run_until,
    run_until_ok,
    tiered_ses,
)
from tests.fixtures.transfers import replica_status
from transfers import queueing
from transfers import requests as rq
from transfers.reaper import Reaper


async def test_two_copies_on_tier1_of_a_dataset_end_ok_and_new_content_follows(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tier1 = await tiered_ses(database, tmp_path)
    lfns = [f"/vo/ds/f{i:03d}" for i in range(50)]
    await dataset_on_src(database, "vo:ds", lfns)
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=2, expression="tier=1"))
    fast = rule_settings(settings)

    await run_until_ok(database, fast, rule["_id"])
    placed = await replicas_by_file(database, lfns)
    chosen = placed[lfns[0]] - {"SRC"}
    assert len(chosen) == 2 and chosen <= set(tier1)
    assert all(ses - {"SRC"} == chosen for ses in placed.values())
    done = await store.get_rule(database, rule["_id"])
    assert (done["locks_ok"], done["locks_replicating"], done["locks_stuck"]) == (100, 0, 0)
    locked = await database["files"].find({"_id": {"$in": lfns}}, {"replicas": 1}).to_list()
    assert all(r.get("locks") == 1 for d in locked for r in d["replicas"] if r["se"] in chosen)

    more = [f"/vo/ds/g{i:02d}" for i in range(10)]
    await dataset_on_src(database, "vo:ds", more)
    assert await feed.follow(database, "t", lease_s=5) >= len(more)  # what the evaluator does first
    assert (await store.get_rule(database, rule["_id"]))["dirty"] is True

    async def all_placed() -> bool:
        current = await store.get_rule(database, rule["_id"])
        return current["state"] == "ok" and not current["dirty"] and current["locks_ok"] == 120

    await run_until(all_placed, rule_daemons(fast, database))
    assert all(ses - {"SRC"} == chosen for ses in (await replicas_by_file(database, more)).values())
    assert await database[locks.LOCKS].count_documents({"rule": rule["_id"], "state": "ok"}) == 120


async def test_a_failing_se_makes_the_rule_stuck_and_the_repairer_moves_its_locks(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    lfns = [f"/vo/rep/f{i}" for i in range(10)]
    await dataset_on_src(database, "vo:rep", lfns)
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:rep", copies=2, expression="tier=1"))
    fast = rule_settings(settings)
    await RuleEvaluator(fast, database).run(max_cycles=1)
    placed = {lock["se"] for lock in await database[locks.LOCKS].find({"rule": rule["_id"]}).to_list()}
    assert placed == {"T1-A", "T1-B"}
    await update_storage_element(database, "T1-B", StorageElementUpdate(write_enabled=False))

    await run_until_ok(database, fast, rule["_id"])
    assert all(ses == {"SRC", "T1-A", "T1-C"} for ses in (await replicas_by_file(database, lfns)).values())
    moved = await database[locks.LOCKS].find({"rule": rule["_id"], "se": "T1-C"}).to_list()
    assert len(moved) == 10 and all(lock["moved_from"] == "T1-B" and "T1-B" in lock["moved_because"]
                                    for lock in moved)
    # The rule was stuck in between: only the repairer writes `last_repair`, and only on a stuck rule
    # (polling for the stuck state itself can miss it when the repairer is quick).
    repaired = (await store.get_rule(database, rule["_id"]))["last_repair"]
    assert repaired["moved"] >= 1 and "switched off for writ" in repaired["reason"]


async def test_a_rule_stuck_with_nowhere_to_go_is_suspended(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path, tier1=1)
    await dataset_on_src(database, "vo:sus", ["/vo/sus/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:sus", copies=1, expression="tier=1"))
    fast = rule_settings(settings, suspend_after_s=0.5)
    await RuleEvaluator(fast, database).run(max_cycles=1)
    await update_storage_element(database, "T1-A", StorageElementUpdate(write_enabled=False))

    async def suspended() -> bool:
        return await rule_state(database, rule["_id"]) == "suspended"

    await run_until(suspended, rule_daemons(fast, database))
    assert "suspended" in (await store.get_rule(database, rule["_id"]))["error"]


async def test_expiry_releases_the_locks_and_the_replicas_may_then_be_deleted(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    lfns = [f"/vo/exp/f{i}" for i in range(5)]
    await dataset_on_src(database, "vo:exp", lfns)
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:exp", copies=1, expression="T1-A",
                                                           lifetime_s=3600))
    fast = rule_settings(settings)

    await run_until_ok(database, fast, rule["_id"])
    await queueing.submit(database, "delete", [{"lfn": lfns[0], "dest_se": "T1-A"}], requester="t")
    await Reaper(fast, database).run(max_cycles=1)
    refused = await database[rq.REQUESTS].find_one({"kind": "delete"})
    assert refused["state"] == "failed" and "rule lock" in refused["last_error"]
    assert await replica_status(database, lfns[0], "T1-A") == "available"

    await rule_edits.update_rule(database, ADMIN, rule["_id"], RuleUpdate(lifetime_s=1))
    await asyncio.sleep(1.2)

    async def gone() -> bool:
        return await database[store.RULES].count_documents({"_id": rule["_id"]}) == 0

    await run_until(gone, [RuleCleaner(fast, database)])
    assert await database[locks.LOCKS].count_documents({"rule": rule["_id"]}) == 0
    files = await database["files"].find({"_id": {"$in": lfns}}, {"replicas": 1}).to_list()
    assert all(r.get("locks", 0) == 0 for d in files for r in d["replicas"])
    assert (await quotas.quotas_and_usage(database, "root"))[0]["used_bytes"] == 0
    await queueing.submit(database, "delete", [{"lfn": lfn, "dest_se": "T1-A"} for lfn in lfns], requester="t2")
    await Reaper(fast, database).run(max_cycles=1)
    assert [await replica_status(database, lfn, "T1-A") for lfn in lfns] == [None] * 5
    assert [await replica_status(database, lfn, "SRC") for lfn in lfns] == ["available"] * 5


async def test_an_admin_deletion_of_a_locked_replica_puts_its_lock_back_to_replicating_and_it_is_copied_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    lfns = [f"/vo/adm/f{i}" for i in range(4)]
    await dataset_on_src(database, "vo:adm", lfns)
    kept = (tmp_path / "src" / lfns[0].lstrip("/")).read_bytes()
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:adm", copies=1, expression="T1-A"))
    fast = rule_settings(settings)

    await run_until_ok(database, fast, rule["_id"])
    # An administrator's request to delete every replica of a file overrides the lock.
    await queueing.submit(database, "delete", [{"lfn": lfns[0]}], requester="admin")
    await Reaper(fast, database).run(max_cycles=1)
    assert (await database[rq.REQUESTS].find_one({"kind": "delete"}))["state"] == "done"
    assert await replica_status(database, lfns[0], "T1-A") is None
    # The rule learns it from the catalogue's change feed (what the evaluator reads first).
    assert await feed.follow(database, "t", lease_s=5) >= 1
    assert (await store.get_rule(database, rule["_id"]))["dirty"] is True

    await RuleEvaluator(fast, database).run(max_cycles=1)
    lock = await database[locks.LOCKS].find_one({"rule": rule["_id"], "lfn": lfns[0]})
    assert lock["state"] == "replicating" and lock["counted"] is False and "removed" in lock["error"]
    current = await store.get_rule(database, rule["_id"])
    assert (current["state"], current["locks_ok"], current["locks_replicating"]) == ("replicating", 3, 1)

    # The data comes back on the source SE: the rule copies it to T1-A again and protects it.
    (tmp_path / "src" / lfns[0].lstrip("/")).write_bytes(kept)
    await add_replicas(database, [{"lfn": lfns[0], "se": "SRC"}])
    await run_until_ok(database, fast, rule["_id"])
    assert await replica_status(database, lfns[0], "T1-A") == "available"
    doc = await database["files"].find_one({"_id": lfns[0]}, {"replicas": 1})
    assert [r.get("locks") for r in doc["replicas"] if r["se"] == "T1-A"] == [1]
    current = await store.get_rule(database, rule["_id"])
    assert (current["locks_ok"], current["locks_replicating"], current["locks_stuck"]) == (4, 0, 0)


async def test_a_forced_removal_of_a_locked_file_makes_its_rules_look_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """A file removed with `force` while rule locks protected its replicas left those rules ok
    with nothing behind them: `file_removed` named no rule, and the rules read no such event.
    The event now names the rules that locked its replicas, and they are evaluated again: the
    lock of the file that is gone is released, the rule's counts follow."""
    await tiered_ses(database, tmp_path, tier1=1)
    lfns = [f"/vo/fr/f{i}" for i in range(3)]
    await dataset_on_src(database, "vo:fr", lfns)
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:fr", copies=1, expression="tier=1"))
    fast = rule_settings(settings)
    await run_until_ok(database, fast, rule["_id"])
    assert (await store.get_rule(database, rule["_id"]))["locks_ok"] == 3
    result = await remove_files(database, ADMIN, [lfns[0]], force=True)
    assert result["successful"][lfns[0]] == {"removed": True}, result
    await feed.follow(database, "t", lease_s=5)
    assert (await store.get_rule(database, rule["_id"]))["dirty"] is True

    async def released() -> bool:
        current = await store.get_rule(database, rule["_id"])
        return current["locks_ok"] == 2 and not current["dirty"]

    await run_until(released, rule_daemons(fast, database), timeout_s=30)
    assert await database["rule_locks"].count_documents({"rule": rule["_id"], "lfn": lfns[0]}) == 0
