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


async def _stuck_rule(db: AsyncDatabase[Document], since: dt.datetime | None = None) -> Document:
    """A rule stuck (since `since`, default now) on one lock, with other SEs to move it to: the
    repairer's next pass moves it."""
    rule = await store.create_rule(db, ADMIN, RuleIn(did="vo:ds", copies=1, expression="tier=1"))
    await locks.insert_locks(db, rule, [locks.new_lock(rule, "/vo/ds/f0", "T1-A", 256, "stuck", error="x")])
    await db["rules"].update_one({"_id": rule["_id"]}, {"$set": {
        "state": "stuck", "stuck_since": since or dt.datetime.now(dt.UTC), "dirty": False, "due": FAR}})
    return rule


async def _cut_short(db: AsyncDatabase[Document], repairer: RuleRepairer, rule: Document) -> None:
    """The repairer's pass cancelled at a random moment, and its lease on the rule run out."""
    cut = asyncio.create_task(repairer.run_once())
    await asyncio.sleep(random.random() * 0.05)
    cut.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cut
    await db["rules"].update_one({"_id": rule["_id"]}, {"$set": {
        "lease_owner": None, "lease_expires": None, "due": dt.datetime.now(dt.UTC)}})


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
        await _cut_short(database, repairer, rule)
        await evaluator.run_once()
        after = await store.get_rule(database, rule["_id"])
        real = {state: await database["locks"].count_documents({"rule": rule["_id"], "state": state})
                for state in locks.LOCK_STATES}
        cut_off += real["stuck"] == 0
        drifted += locks.counters_of(after) != real
        await database["rules"].update_one({"_id": rule["_id"]}, {"$set": {"due": FAR, "state": "replicating"}})
    assert drifted == 0, f"{drifted} of {ROUNDS} rules kept counters off ({cut_off} moved before the cut)"


async def test_a_rule_whose_stuck_lock_a_cut_short_repair_moved_is_not_suspended(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """The repairer takes the rule again first: it found no stuck lock to move and suspended a
    rule stuck (by its count) for longer than `rules.suspend_after_s`."""
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", ["/vo/ds/f0"])
    repairer = RuleRepairer(rule_settings(settings, suspend_after_s=60.0), database)
    suspended = 0
    for _ in range(ROUNDS):
        rule = await _stuck_rule(database, dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        await _cut_short(database, repairer, rule)
        await repairer.run_once()
        after = await store.get_rule(database, rule["_id"])
        stuck = await database["locks"].count_documents({"rule": rule["_id"], "state": "stuck"})
        suspended += after["state"] == "suspended" and stuck == 0
        await database["rules"].update_one({"_id": rule["_id"]}, {"$set": {"due": FAR, "state": "replicating"}})
    assert suspended == 0, f"{suspended} of {ROUNDS} rules suspended with no stuck lock"
