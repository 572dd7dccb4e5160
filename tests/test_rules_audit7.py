"""Rules audit (seventh): a locked rule past its lifetime; a locked replica registered again; a
repair or a rule daemon cut short (killed between two writes, stalled past its lease)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import now
from catalogue.replicas import add_replicas, remove_replicas
from kernel import lease
from kernel.db import Document
from kernel.settings import Settings
from rules import evaluator, feed, locks, quotas, rule_claims, rule_edits, store
from rules.cleaner import RuleCleaner
from rules.evaluator import RuleEvaluator
from rules.repairer import repair
from rules.rule_models import RuleIn, RuleUpdate
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, run_until, run_until_ok, tiered_ses


async def _locked_past_its_lifetime(db: AsyncDatabase[Document], tmp_path: Path) -> Document:
    """A locked rule on a one-file dataset whose lifetime ran out (as `lifetime_s` would have it,
    without the wait)."""
    await tiered_ses(db, tmp_path)
    await dataset_on_src(db, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(db, ADMIN, RuleIn(did="vo:ds", copies=1, expression="tier=1",
                                                     locked=True, lifetime_s=3600))
    await db["rules"].update_one({"_id": rule["_id"]}, {"$set": {"expires_at": now() - dt.timedelta(seconds=5)}})
    return rule


async def test_a_locked_rule_past_its_lifetime_can_be_unlocked_and_is_then_cleaned(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    rule = await _locked_past_its_lifetime(database, tmp_path)
    # "a locked rule cannot be deleted, nor expire, until unlocked": unlocking must stay possible
    unlocked = await rule_edits.update_rule(database, ADMIN, rule["_id"], RuleUpdate(locked=False))
    assert unlocked["locked"] is False

    async def gone() -> bool:
        return await database["rules"].find_one({"_id": rule["_id"]}) is None

    await run_until(gone, [RuleCleaner(settings, database)], timeout_s=30)


async def test_a_locked_rule_past_its_lifetime_is_still_evaluated(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    rule = await _locked_past_its_lifetime(database, tmp_path)
    taken = await rule_claims.claim(database, "t", evaluator.evaluator_query(now()), lease_s=10)
    assert taken is not None and taken["_id"] == rule["_id"]


async def _replica(db: AsyncDatabase[Document], lfn: str, se: str) -> Document:
    doc = await db["files"].find_one({"_id": lfn}, {"replicas": 1})
    return next(r for r in doc["replicas"] if r["se"] == se)


async def test_a_locked_replica_registered_again_before_the_evaluation_is_protected_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="T1-A"))
    fast = rule_settings(settings)
    await run_until_ok(database, fast, rule["_id"])
    before = await _replica(database, "/vo/ds/f0", "T1-A")
    assert before["lock_rules"] == [rule["_id"]]
    # The file's owner takes the replica's record off and registers it again (same bytes, same
    # URL): the new record carries no lock, while the rule's lock is still ok and `counted`.
    await remove_replicas(database, [{"lfn": "/vo/ds/f0", "se": "T1-A"}])
    await add_replicas(database, [{"lfn": "/vo/ds/f0", "se": "T1-A", "url": before["url"]}])
    assert await feed.follow(database, "t", lease_s=5) >= 1  # the removal makes the rule dirty
    assert (await store.get_rule(database, rule["_id"]))["dirty"] is True
    await RuleEvaluator(fast, database).run(max_cycles=1)
    after = await _replica(database, "/vo/ds/f0", "T1-A")
    # Unprotected, the reaper could free it (and its removal would tell no rule) while the rule says ok.
    assert (after.get("lock_rules"), after.get("locks")) == ([rule["_id"]], 1)
    assert (await store.get_rule(database, rule["_id"]))["state"] == "ok"


async def test_a_repair_killed_between_its_new_lock_and_the_old_ones_release_leaves_no_extra_copy(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="tier=1"))
    fast = rule_settings(settings)
    await RuleEvaluator(fast, database).run(max_cycles=1)
    [first] = await locks.locks_of(database, rule["_id"])
    await locks.set_state(database, rule["_id"], [first["_id"]], "replicating", "stuck", {"error": "failed"})
    current = await store.get_rule(database, rule["_id"])
    # What a repair writes first, and all a repair killed right after it wrote: the stuck lock's
    # replacement on another SE (its old lock not released yet).
    other = next(se for se in ("T1-A", "T1-B", "T1-C") if se != first["se"])
    await locks.insert_locks(database, current, [locks.new_lock(
        current, "/vo/ds/f0", other, first["size"], "replicating", failed_ses=[first["se"]], moved_from=first["se"])])
    await repair(database, await store.get_rule(database, rule["_id"]), fast.rules)
    # The file has its one copy's lock, the account is charged once, and no third SE was asked for.
    assert [lock["se"] for lock in await locks.locks_of(database, rule["_id"])] == [other]
    assert [(row["used_files"], row["used_bytes"]) for row in await quotas.quotas_and_usage(database)
            if row["used_files"]] == [(1, first["size"])]


async def _kept() -> bool:
    return True


async def test_a_rule_daemon_that_stalled_past_its_lease_writes_no_lock(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="SRC|T1-A"))
    ok = locks.new_lock(rule, "/vo/ds/f0", "SRC", 256, "ok")
    # Its lease taken (and last renewed) a whole lease ago: its successor, the cleaner of the rule
    # deleted meanwhile, may have released the rule's locks and removed it.
    stalled = time.monotonic() - 10.0
    held, _ = await lease.while_held(locks.insert_locks(database, rule, [ok]), _kept, every_s=60, lease_s=10.0,
                                     since=stalled)
    assert not held
    held, _ = await lease.while_held(locks.protect(database, [ok]), _kept, every_s=60, lease_s=10.0, since=stalled)
    assert not held
    assert await database[locks.LOCKS].count_documents({}) == 0
    assert (await _replica(database, "/vo/ds/f0", "SRC")).get("lock_rules") in (None, [])
    assert all(row["used_files"] == 0 for row in await quotas.quotas_and_usage(database))
