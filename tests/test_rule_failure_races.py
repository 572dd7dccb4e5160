"""A daemon's failed pass over a rule racing its owner's resume (eighth fixes): each reproduced by
running both sides concurrently for a few hundred rounds and counting the rounds that end wrong.

The owner mends the rule and resumes it while an evaluator (or a repairer) is failing on what it
read before the mend. The failed pass's writes (its error, its failure count and backoff time)
were unguarded, unlike a successful pass's release: one landing after the resume put back the
error and a failure count the resume had just cleared, and kept the resumed rule waiting out a
backoff its mended record never earned."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from rules import rule_edits, store
from rules.evaluator import RuleEvaluator
from rules.repairer import RuleRepairer
from rules.rule_models import RuleUpdate
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import rule_settings
from tests.test_rule_poison import DEEP, bad_rule

# Before its fix 4-12 of 150 evaluations and 28 of 150 repairs undid the resume: the evaluations'
# rate allows no cut; 30 repair rounds miss theirs with p < 0.3%.
ROUNDS = 150
REPAIR_ROUNDS = 30


async def _jitter() -> None:
    await asyncio.sleep(random.random() * 0.01)


async def _failing_and_stuck(db: AsyncDatabase[Document], rule_id: str, **more: object) -> None:
    """The rule stuck, free, with a record its daemons cannot read (its expression too deep)."""
    await db["rules"].update_one({"_id": rule_id}, {"$set": {
        "expression": DEEP, "state": "stuck", "stuck_since": dt.datetime.now(dt.UTC), "error": "stuck",
        "lease_owner": None, "lease_expires": None, "due": dt.datetime.now(dt.UTC), "evaluation_failures": 0,
        "retry_at": None, "repair_failures": 0, "repair_retry_at": None, **more}})


async def _mend_and_resume(db: AsyncDatabase[Document], rule_id: str) -> Document:
    await _jitter()
    await db["rules"].update_one({"_id": rule_id}, {"$set": {"expression": "tier=1"}})  # its owner's mend
    return await rule_edits.update_rule(db, ADMIN, rule_id, RuleUpdate(state="replicating"))


def _failure_put_back(after: Document, daemon: str) -> bool:
    """The resumed (and mended) rule shows a failure of a pass that read it before its mend."""
    return (f"{daemon} failed" in str(after.get("error")) or after["state"] == "suspended"
            or bool(after.get("evaluation_failures")) or after.get("retry_at") is not None)


async def test_a_failed_evaluation_does_not_undo_a_resume(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    evaluator = RuleEvaluator(rule_settings(settings, poll_s=60.0, suspend_after_failures=1), database)
    undone = failed = 0
    for _ in range(ROUNDS):
        await _failing_and_stuck(database, bad["_id"], dirty=True)

        async def evaluate() -> int:
            await _jitter()
            return await evaluator.run_once()

        answer, _ = await asyncio.gather(_mend_and_resume(database, bad["_id"]), evaluate())
        assert answer["state"] == "replicating"
        after = await store.get_rule(database, bad["_id"])
        failed += "parentheses" in str(after.get("last_error"))  # its failure had landed before the resume
        undone += _failure_put_back(after, "rule-evaluator")
        assert after["lease_owner"] is None, after
    assert undone == 0, f"{undone} of {ROUNDS} resumes undone by a failed evaluation ({failed} failed before)"


async def test_a_failed_repair_does_not_undo_a_resume(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    repairer = RuleRepairer(rule_settings(settings, poll_s=60.0), database)
    undone = 0
    for _ in range(REPAIR_ROUNDS):
        await _failing_and_stuck(database, bad["_id"], dirty=False)

        async def repair() -> int:
            await _jitter()
            return await repairer.run_once()

        answer, _ = await asyncio.gather(_mend_and_resume(database, bad["_id"]), repair())
        assert answer["state"] == "replicating"
        after = await store.get_rule(database, bad["_id"])
        undone += (_failure_put_back(after, "rule-repairer") or bool(after.get("repair_failures"))
                   or after.get("repair_retry_at") is not None)
        assert after["lease_owner"] is None, after
    assert undone == 0, f"{undone} of {REPAIR_ROUNDS} resumes undone by a failed repair"
