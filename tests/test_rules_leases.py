"""A rule daemon keeps the lease of the rule it works on for as long as the work takes, and
stops working on a rule whose lease another daemon took over."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, ensure_indexes
from kernel.settings import Settings
from rules import rule_claims, store
from rules.daemon import RuleDaemon
from rules.evaluator import evaluator_query
from rules.rule_models import RuleIn
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, tiered_ses

LEASE_S = 1.0


class SlowDaemon(RuleDaemon):
    """Works on a rule for `seconds`, noting whether it finished."""

    name = "slow"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document], seconds: float) -> None:
        super().__init__(settings, db)
        self.seconds = seconds
        self.finished = False

    def query(self) -> dict[str, Any]:
        return {}

    async def work_on(self, rule: Document) -> int:
        await asyncio.sleep(self.seconds)
        self.finished = True
        await rule_claims.release(self.db, rule, self.worker, {})
        return 1


async def claimed_rule(database: AsyncDatabase[Document], tmp_path: Path, daemon: SlowDaemon) -> Document:
    """A rule on a one-file dataset, claimed by daemon."""
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:lease", ["/vo/lease/f0"])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:lease", copies=1, expression="tier=1"))
    claimed = await rule_claims.claim(database, daemon.worker, {"_id": rule["_id"]}, lease_s=LEASE_S)
    assert claimed is not None
    return claimed


async def test_the_lease_is_renewed_while_the_work_outlasts_it(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    slow = SlowDaemon(rule_settings(settings, lease_s=LEASE_S), database, seconds=4 * LEASE_S)
    rule = await claimed_rule(database, tmp_path, slow)
    work = asyncio.create_task(slow.holding(rule))
    for _ in range(6):
        await asyncio.sleep(LEASE_S / 2)
        assert await rule_claims.claim(database, "other", {"_id": rule["_id"]}, lease_s=LEASE_S) is None
    assert await work == 1 and slow.finished
    assert (await store.get_rule(database, rule["_id"]))["lease_owner"] is None


async def test_work_stops_when_the_lease_was_taken_over(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    slow = SlowDaemon(rule_settings(settings, lease_s=LEASE_S), database, seconds=10 * LEASE_S)
    rule = await claimed_rule(database, tmp_path, slow)
    # As if the holder had stalled past its lease and another daemon had taken the rule.
    await database[store.RULES].update_one({"_id": rule["_id"]}, {"$set": {
        "lease_owner": "other", "lease_expires": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)}})
    assert await asyncio.wait_for(slow.holding(rule), timeout=3 * LEASE_S) == 0
    assert not slow.finished
    assert (await store.get_rule(database, rule["_id"]))["lease_owner"] == "other"


async def test_the_evaluator_takes_dirty_rules_then_replicating_then_stuck_ones_due_and_nothing_else(
    database: AsyncDatabase[Document],
) -> None:
    """Its claims are three queries now (each read from an index on the embedded database): the
    order they are tried in, and what none of them takes (suspended, expired, not due, held,
    backing off after a failed pass)."""
    await ensure_indexes(database, store.INDEXES)
    at = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)
    rules = {"stuck": ("stuck", False, at - 2 * hour, None), "replicating": ("replicating", False, at - hour, None),
             "dirty": ("ok", True, at + hour, None), "suspended": ("suspended", True, at - hour, None),
             "expired": ("ok", True, at - hour, at - hour), "later": ("replicating", False, at + hour, None),
             "held": ("replicating", False, at - 3 * hour, None),
             "failing": ("replicating", True, at - 4 * hour, None)}
    await database[store.RULES].insert_many([
        {"_id": name, "state": state, "dirty": dirty, "due": due, "expires_at": expires, "locked": False,
         "lease_owner": "other" if name == "held" else None,
         "lease_expires": at + hour if name == "held" else None,
         **({"retry_at": at + hour} if name == "failing" else {})}
        for name, (state, dirty, due, expires) in rules.items()])
    taken = []
    while (rule := await rule_claims.claim(database, "evaluator", evaluator_query(at), lease_s=60)) is not None:
        taken.append(rule["_id"])
    assert taken == ["dirty", "replicating", "stuck"]
