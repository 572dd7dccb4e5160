"""End to end: a `cairn daemon rule-evaluator` process SIGKILLed while it places a large rule's
locks (a batch charged to the account and noted, its locks not all written or its note not taken
off) leaves the account's quota usage what the locks hold once the next evaluator process has
taken the rule: it settles the dead call's notes before its own pass (`rules.quota_notes`). The
kill is aimed at a moment a note is on a usage record, and tried again on a later batch when it
landed once the batch's locks were all written."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import quota_rebuild, quotas, store
from rules.rule_models import RuleIn
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.daemons import DaemonProcesses, daemon_env
from tests.fixtures.quota_locks import notes_left
from tests.fixtures.rules import dataset_on_src, tiered_ses

pytestmark = pytest.mark.slow

COUNT = 6000  # six batches of locks on each of two SEs
TRIES = 5


def _env(settings: Settings) -> dict[str, str]:
    env = daemon_env(settings)
    env.update({"CAIRN_RULES__LEASE_S": "2", "CAIRN_RULES__POLL_S": "0.2", "CAIRN_RULES__IDLE_SLEEP_S": "0.1"})
    return env


async def _charged(db: AsyncDatabase[Document]) -> int:
    return sum(int(d["files"]) for d in await db[quotas.ACCOUNT_USAGE].find({}).to_list())


async def _locked(db: AsyncDatabase[Document]) -> int:
    return await db[rule_locks.LOCKS].count_documents({})


async def test_an_evaluator_killed_between_a_charge_and_its_settling_leaves_the_usage_exact(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path, tier1=2)
    await dataset_on_src(database, "vo:big", [f"/vo/big/f{i:05d}" for i in range(COUNT)], size=16)
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:big", copies=2, expression="tier=1"))
    (tmp_path / "logs").mkdir()
    evaluators = DaemonProcesses("rule-evaluator", _env(settings), tmp_path / "logs")
    off = False
    try:
        for _ in range(TRIES):
            proc = evaluators.start()
            deadline = time.monotonic() + 60
            while not await notes_left(database):  # a batch charged and noted, its call not done
                assert time.monotonic() < deadline, f"no charge seen; logs:\n{evaluators.logs()[-4000:]}"
                await asyncio.sleep(0.002)
            evaluators.kill(proc)
            if off := await notes_left(database) and await _charged(database) != await _locked(database):
                break
        assert off, f"no kill landed between a charge and its locks in {TRIES} tries"

        evaluators.start()
        deadline = time.monotonic() + 120
        while await database[rule_locks.LOCKS].count_documents({}) < 2 * COUNT or await notes_left(database):
            assert time.monotonic() < deadline, f"not placed; logs:\n{evaluators.logs()[-4000:]}"
            await asyncio.sleep(0.2)
    finally:
        evaluators.stop_all()
    report = await quota_rebuild.rebuild(database, fix=False)
    assert report["drifted"] == 0, report["drift"]
    counted = rule_locks.counters_of(await store.get_rule(database, rule["_id"]))
    assert counted == await rule_locks.recount(database, rule["_id"])
