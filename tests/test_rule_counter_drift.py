"""A rule's lock counters left off by a daemon cut short between changing locks and counting them
are set right by the evaluator's next pass (eighth fixes). The repairer moves a stuck lock by
writing its replacement and then deleting it; cut short after the deletion and before its count,
the rule kept `locks_stuck` for a lock that no longer existed. A rule not dirty is evaluated by
`progress`, which compared only the replicating locks with their counter: the rule was settled
stuck from the phantom count at every pass, never became ok once its copies were made, and the
repairer, finding nothing stuck to move, suspended it `rules.suspend_after_s` later. Reproduced
by cancelling the repairer at a random moment of its move, a few hundred times."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from rules import locks, store
from rules.evaluator import RuleEvaluator
from rules.repairer import RuleRepairer
from rules.rule_models import RuleIn
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, tiered_ses

ROUNDS = 150
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


async def _stuck_rule(db: AsyncDatabase[Document]) -> Document:
    """A rule stuck on one lock, with other SEs to move it to: the repairer's next pass moves it."""
    rule = await store.create_rule(db, ADMIN, RuleIn(did="vo:ds", copies=1, expression="tier=1"))
    await locks.insert_locks(db, rule, [locks.new_lock(rule, "/vo/ds/f0", "T1-A", 256, "stuck", error="x")])
    await db["rules"].update_one({"_id": rule["_id"]}, {"$set": {
        "state": "stuck", "stuck_since": dt.datetime.now(dt.UTC), "dirty": False, "due": FAR}})
    return rule


async def test_counters_a_cut_short_repair_left_off_are_set_right_by_the_next_pass(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    fast = rule_settings(settings)
    repairer, evaluator = RuleRepairer(fast, database), RuleEvaluator(fast, database)
    drifted = cut_off = 0
    for _ in range(ROUNDS):
        rule = await _stuck_rule(database)
        cut = asyncio.create_task(repairer.run_once())
        await asyncio.sleep(random.random() * 0.05)
        cut.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cut
        # Its lease ran out, and the rule is due (as after a repair) for the evaluator.
        await database["rules"].update_one({"_id": rule["_id"]}, {"$set": {
            "lease_owner": None, "lease_expires": None, "due": dt.datetime.now(dt.UTC)}})
        await evaluator.run_once()
        after = await store.get_rule(database, rule["_id"])
        real = {state: await database["locks"].count_documents({"rule": rule["_id"], "state": state})
                for state in locks.LOCK_STATES}
        cut_off += real["stuck"] == 0
        drifted += locks.counters_of(after) != real
        await database["rules"].update_one({"_id": rule["_id"]}, {"$set": {"due": FAR, "state": "replicating"}})
    assert drifted == 0, f"{drifted} of {ROUNDS} rules kept counters off ({cut_off} moved before the cut)"
