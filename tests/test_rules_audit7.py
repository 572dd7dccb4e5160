"""Rules audit (seventh): a locked rule past its lifetime, and the replicas' lock sets under
concurrent lock changes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import now
from kernel.db import Document
from kernel.settings import Settings
from rules import evaluator, store
from rules.cleaner import RuleCleaner
from rules.store import RuleIn, RuleUpdate
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, run_until, tiered_ses


async def _past_its_lifetime(db: AsyncDatabase[Document], rule_id: str) -> None:
    """The rule's lifetime ran out (as `lifetime_s` would have it, without the wait)."""
    await db["rules"].update_one({"_id": rule_id}, {"$set": {"expires_at": now() - dt.timedelta(seconds=5)}})


async def test_a_locked_rule_past_its_lifetime_can_be_unlocked_and_is_then_cleaned(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="tier=1",
                                                           locked=True, lifetime_s=3600))
    await _past_its_lifetime(database, rule["_id"])
    # "a locked rule cannot be deleted, nor expire, until unlocked": unlocking must stay possible
    unlocked = await store.update_rule(database, ADMIN, rule["_id"], RuleUpdate(locked=False))
    assert unlocked["locked"] is False

    async def gone() -> bool:
        return await database["rules"].find_one({"_id": rule["_id"]}) is None

    await run_until(gone, [RuleCleaner(settings, database)], timeout_s=30)


async def test_a_locked_rule_past_its_lifetime_is_still_evaluated(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:ds", copies=1, expression="tier=1",
                                                           locked=True, lifetime_s=3600))
    await _past_its_lifetime(database, rule["_id"])
    taken = await store.claim(database, "t", evaluator.evaluator_query(now()), lease_s=10)
    assert taken is not None and taken["_id"] == rule["_id"]
