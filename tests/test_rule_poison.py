"""One rule the evaluator cannot evaluate does not stop the others: its error is kept on it and
the pass goes on (a rule whose expression was stored before expressions had a depth bound raised
out of every pass, first of all since it stays dirty, so no replicating rule moved on again),
and it is not called ok while it was never evaluated (it was: no locks counted, so "ok")."""

from __future__ import annotations

from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.bounds import MAX_EXPRESSION_DEPTH
from kernel.db import Document
from kernel.settings import Settings
from rules import store
from rules.store import RuleIn
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, run_until_ok, tiered_ses


async def test_a_rule_that_cannot_be_evaluated_does_not_stop_the_others(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:bad", ["/vo/bad/f"])
    await dataset_on_src(database, "vo:good", ["/vo/good/f"])
    bad = await store.create_rule(database, ADMIN, RuleIn(did="vo:bad", copies=1, expression="tier=1"))
    deep = "(" * (MAX_EXPRESSION_DEPTH + 1) + "tier=1" + ")" * (MAX_EXPRESSION_DEPTH + 1)
    await database["rules"].update_one({"_id": bad["_id"]}, {"$set": {"expression": deep}})  # stored before
    good = await store.create_rule(database, ADMIN, RuleIn(did="vo:good", copies=1, expression="tier=1"))
    await run_until_ok(database, rule_settings(settings), good["_id"], timeout_s=30)
    kept = await store.get_rule(database, bad["_id"])
    assert "parentheses nest deeper" in kept["error"] and kept["dirty"], kept  # looked at again, first
    assert kept["state"] != "ok", kept
