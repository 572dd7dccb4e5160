"""A replicating rule wakes from the change feed: when the transfers of its locks end (their
replicas turn available), the evaluator looks at it again at once, not after `rules.poll_s`;
the poll stays as the fallback. And a wake never brings a rule forward for a replica it does
not wait for."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from rules import rule_claims, store, wake
from rules.evaluation import evaluate
from rules.rule_models import RuleIn
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, run_until_ok, tiered_ses

POLL_S = 600.0
LATER = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


async def test_a_rule_turns_ok_soon_after_its_transfers_end_with_a_long_poll(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:wake", [f"/vo/wake/f{i}" for i in range(5)])
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:wake", copies=1, expression="tier=1"))
    began = time.monotonic()
    # The first pass submits the transfers and gives the rule back due in POLL_S: only a wake
    # can bring it to ok within the timeout.
    await run_until_ok(database, rule_settings(settings, poll_s=POLL_S), rule["_id"], timeout_s=90)
    assert time.monotonic() - began < 90 < POLL_S


async def test_only_the_rules_waiting_on_a_replica_are_woken(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:one", ["/vo/one/f"])
    await dataset_on_src(database, "vo:two", ["/vo/two/f"])
    fast = rule_settings(settings, poll_s=POLL_S)
    rules = {}
    for did in ("vo:one", "vo:two"):
        rule = await store.create_rule(database, ADMIN, RuleIn(did=did, copies=1, expression="tier=1"))
        await evaluate(database, rule, fast.rules)
        await rule_claims.clear_dirty(database, rule["_id"], 0)
        await database["rules"].update_one({"_id": rule["_id"]}, {"$set": {"due": LATER}})
        rules[did] = rule["_id"]
    lock = await database["locks"].find_one({"rule": rules["vo:one"]})
    assert lock is not None
    assert await wake.replicas_available(database, [(lock["lfn"], lock["se"]), ("/vo/two/f", "SRC")]) == 1
    one, two = await store.get_rule(database, rules["vo:one"]), await store.get_rule(database, rules["vo:two"])
    assert one["due"].year < 2100 and one["wakes"] == 1
    assert two["due"].year == 2100 and "wakes" not in two
