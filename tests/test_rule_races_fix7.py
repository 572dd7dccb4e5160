"""Races between a rule daemon's release and its owner's change of the same rule (seventh fixes):
each reproduced by running both sides concurrently for a few hundred rounds and counting the
rounds that end wrong.

- The repairer suspends (or moves) a stuck rule while its owner resumes it: its release was
  unguarded, so a resume that had answered "replicating" was undone (the rule suspended again,
  or its `stuck_since` put back so it was suspended at the next repair).
- The evaluator gives a rule back settled (its `stuck_since`) and records its error, as read
  before a resume made during its pass.
- A deletion and a change of copies and lifetime at once both answered success."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import Conflict
from kernel.settings import Settings
from rules import locks, rule_edits, store
from rules.evaluator import RuleEvaluator
from rules.repairer import RuleRepairer
from rules.rule_models import RuleIn, RuleUpdate
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, tiered_ses

ROUNDS = 150


async def _stuck_for_long(db: AsyncDatabase[Document], rule_id: str) -> None:
    """The rule stuck for a day with nothing to move: the repairer's next pass suspends it."""
    await db["rules"].update_one({"_id": rule_id}, {"$set": {
        "state": "stuck", "stuck_since": dt.datetime.now(dt.UTC) - dt.timedelta(days=1), "dirty": False,
        "error": "stuck", "lease_owner": None, "lease_expires": None, "repair_retry_at": None}})


async def _jitter() -> None:
    await asyncio.sleep(random.random() * 0.01)


async def test_a_resume_during_a_repair_is_not_undone(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="T1-A"))
    repairer = RuleRepairer(rule_settings(settings, suspend_after_s=60.0), database)
    undone = resumed = 0
    for _ in range(ROUNDS):
        await _stuck_for_long(database, rule["_id"])

        async def resume() -> Document:
            await _jitter()
            return await rule_edits.update_rule(database, ADMIN, rule["_id"], RuleUpdate(state="replicating"))

        async def repair() -> int:
            await _jitter()
            return await repairer.run_once()

        answer, _ = await asyncio.gather(resume(), repair())
        after = await store.get_rule(database, rule["_id"])
        assert answer["state"] == "replicating"  # stuck or suspended when read: resumed either way
        resumed += 1
        if after["state"] == "suspended" or after.get("stuck_since") is not None:
            undone += 1
        assert after["lease_owner"] is None, after
    assert resumed > 0
    assert undone == 0, f"{undone} of {resumed} resumes undone by the repairer"


async def test_a_resume_during_an_evaluation_keeps_its_fresh_stuck_time(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """The evaluator gives a stuck rule back settled from its counters, with the `stuck_since` it
    read; a resume in between (which clears it) had it put back, a day old, so the repairer
    suspended the resumed rule at its next pass instead of giving it `suspend_after_s` again."""
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="T1-A"))
    await locks.insert_locks(database, rule, [locks.new_lock(rule, "/vo/ds/f0", "T1-A", 256, "stuck", error="x")])
    evaluator = RuleEvaluator(rule_settings(settings), database)
    undone = 0
    for _ in range(ROUNDS):
        await _stuck_for_long(database, rule["_id"])
        await database["rules"].update_one({"_id": rule["_id"]}, {"$set": {"due": dt.datetime.now(dt.UTC)}})

        async def resume() -> Document:
            await _jitter()
            return await rule_edits.update_rule(database, ADMIN, rule["_id"], RuleUpdate(state="replicating"))

        async def evaluate() -> int:
            await _jitter()
            return await evaluator.run_once()

        await asyncio.gather(resume(), evaluate())
        after = await store.get_rule(database, rule["_id"])
        since = after.get("stuck_since")
        if after["state"] == "suspended" or (since is not None and since < dt.datetime.now(dt.UTC)
                                              - dt.timedelta(hours=1)):
            undone += 1
        assert after["lease_owner"] is None, after
    assert undone == 0, f"{undone} of {ROUNDS} resumes given back their old stuck time by the evaluator"


async def test_a_resume_during_an_evaluation_keeps_its_error_cleared(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """An evaluation records what it found on the rule (`unplaced`, its error) and wrote back the
    error it had read, so one running while its owner resumed the rule put back the error the
    resume had moved to `last_error`; nothing cleared it until the rule was ok."""
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="T1-A"))
    await locks.insert_locks(database, rule, [locks.new_lock(rule, "/vo/ds/f0", "T1-A", 256, "replicating")])
    evaluator = RuleEvaluator(rule_settings(settings), database)
    undone = 0
    for _ in range(ROUNDS):
        await _stuck_for_long(database, rule["_id"])
        await database["rules"].update_one({"_id": rule["_id"]}, {"$set": {"dirty": True}})

        async def resume() -> Document:
            await _jitter()
            return await rule_edits.update_rule(database, ADMIN, rule["_id"], RuleUpdate(state="replicating"))

        async def evaluate() -> int:
            await _jitter()
            return await evaluator.run_once()

        await asyncio.gather(resume(), evaluate())
        after = await store.get_rule(database, rule["_id"])
        undone += after["error"] == "stuck"
        assert after["lease_owner"] is None, after
    assert undone == 0, f"{undone} of {ROUNDS} resumes given back their old error by the evaluator"


async def test_a_deletion_and_a_new_lifetime_at_once_do_not_both_succeed_and_keep_the_rule(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """Deleting a rule expires it; a change is refused on an expired rule. A change of copies and
    lifetime that read the rule before the deletion wrote after it (its quota check reads on), so
    both answered success and the deleted rule was alive again (or, had the cleaner taken it
    meanwhile, removed after its owner was told its lifetime was extended)."""
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    both = 0
    for _ in range(ROUNDS):
        rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="tier=1"))

        async def extend(rule_id: str = rule["_id"]) -> bool:
            await _jitter()
            try:
                await rule_edits.update_rule(database, ADMIN, rule_id, RuleUpdate(copies=2, lifetime_s=3600))
            except Conflict:
                return False
            return True

        async def delete(rule_id: str = rule["_id"]) -> bool:
            await _jitter()
            await rule_edits.delete_rule(database, ADMIN, rule_id)
            return True

        extended, deleted = await asyncio.gather(extend(), delete())
        after = await store.get_rule(database, rule["_id"])
        if extended and deleted and after["expires_at"] > dt.datetime.now(dt.UTC):
            both += 1
        await database["rules"].delete_one({"_id": rule["_id"]})
    assert both == 0, f"{both} of {ROUNDS} deletions undone by a lifetime change that answered success"
