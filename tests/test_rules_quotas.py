"""Quota accounting of rules: a file reached through two datasets of a container counts once,
in the check when the rule is created and in the bytes its locks charge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import dataset_contents, datasets
from catalogue.datasets import DidIn
from catalogue.vos import Vo, VoSe, put_vo
from kernel.db import Document
from kernel.errors import QuotaExceeded
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import quotas, store
from rules.evaluation import evaluate
from rules.evaluator import RuleEvaluator
from rules.quotas import QuotaIn
from rules.repairer import repair
from rules.rule_models import RuleIn
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, tiered_ses

SIZE = 100


@pytest.fixture
async def shared_container(database: AsyncDatabase[Document], tmp_path: Path) -> None:
    """vo:both holds vo:one {a, shared} and vo:two {b, shared}: three files, four memberships."""
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:one", ["/vo/c/a", "/vo/c/shared"], size=SIZE)
    await dataset_on_src(database, "vo:two", ["/vo/c/b"], size=SIZE)
    attached = await dataset_contents.attach_files(database, ADMIN, "vo:two", ["/vo/c/shared"])
    assert not attached["failed"]
    await datasets.create_did(database, ADMIN, DidIn(did="vo:both", type="container"))
    linked = await dataset_contents.attach_children(database, ADMIN, "vo:both", ["vo:one", "vo:two"])
    assert not linked["failed"]


async def test_a_file_in_two_datasets_of_a_container_counts_once_against_the_quota(
    database: AsyncDatabase[Document], settings: Settings, shared_container: None,
) -> None:
    await quotas.set_quota(database, QuotaIn(account="root", se="T1-A", bytes=3 * SIZE))
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:both", copies=1, expression="T1-A"))
    await RuleEvaluator(rule_settings(settings), database).run(max_cycles=1)
    locks = await database[rule_locks.LOCKS].find({"rule": rule["_id"]}).to_list()
    assert sorted(lock["lfn"] for lock in locks) == ["/vo/c/a", "/vo/c/b", "/vo/c/shared"]
    assert (await store.get_rule(database, rule["_id"]))["unplaced"] == 0
    usage = await quotas.quotas_and_usage(database, "root")
    assert [(u["se"], u["used_bytes"], u["used_files"]) for u in usage] == [("T1-A", 3 * SIZE, 3)]


async def test_a_container_rule_larger_than_the_quota_by_distinct_files_is_still_refused(
    database: AsyncDatabase[Document], shared_container: None,
) -> None:
    await quotas.set_quota(database, QuotaIn(account="root", se="T1-A", bytes=3 * SIZE - 1))
    with pytest.raises(QuotaExceeded) as refused:
        await store.create_rule(database, ADMIN, RuleIn(did="vo:both", copies=1, expression="T1-A"))
    assert refused.value.details["needed_bytes"] == 3 * SIZE and f"needs room for {3 * SIZE}" in refused.value.message
    assert await database[store.RULES].count_documents({}) == 0


TWO = (("vo:p", "/vo/q/p"), ("vo:r", "/vo/q/r"))  # two datasets of one file each


async def two_datasets(database: AsyncDatabase[Document], tmp_path: Path) -> None:
    """The tiered SEs, and the datasets of TWO, each file of SIZE bytes on SRC."""
    await tiered_ses(database, tmp_path)
    for did, lfn in TWO:
        await dataset_on_src(database, did, [lfn], size=SIZE)


async def test_rules_of_one_account_placed_at_once_cannot_together_pass_its_quota(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    # Each rule fits alone (both are made while the account locks nothing); only one fits beside
    # the other. Two daemons evaluating them at the same moment each read the same room.
    await two_datasets(database, tmp_path)
    await quotas.set_quota(database, QuotaIn(account="root", se="T1-A", bytes=SIZE + SIZE // 2))
    rules = [await store.create_rule(database, ADMIN, RuleIn(did=did, copies=1, expression="T1-A"))
             for did in ("vo:p", "vo:r")]
    fast = rule_settings(settings).rules
    await asyncio.gather(*(evaluate(database, rule, fast) for rule in rules))

    usage = await quotas.quotas_and_usage(database, "root")
    assert [(u["se"], u["used_bytes"], u["used_files"]) for u in usage] == [("T1-A", SIZE, 1)]
    assert await database[rule_locks.LOCKS].count_documents({}) == 1
    after = [await store.get_rule(database, rule["_id"]) for rule in rules]
    assert sorted(rule["unplaced"] for rule in after) == [0, 1]
    # The refused one is placed by a later evaluation once there is room.
    await quotas.set_quota(database, QuotaIn(account="root", se="T1-A", bytes=2 * SIZE))
    waiting = next(rule for rule in after if rule["unplaced"])
    await evaluate(database, waiting, fast)
    assert (await store.get_rule(database, waiting["_id"]))["unplaced"] == 0
    assert [u["used_bytes"] for u in await quotas.quotas_and_usage(database, "root")] == [2 * SIZE]


async def test_stuck_locks_moved_at_once_cannot_together_pass_the_quota_of_their_new_se(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    # Two rules of one account, each with a lock stuck on T1-A; T1-B has room for one file, T1-C
    # none. Two repairers at the same moment both choose T1-B: one moves there, the other's lock
    # stays where it was (stuck), not released for a lock that was never written.
    await two_datasets(database, tmp_path)
    await quotas.set_quota(database, QuotaIn(account="root", se="T1-B", bytes=SIZE + SIZE // 2))
    await quotas.set_quota(database, QuotaIn(account="root", se="T1-C", bytes=0))
    rules = []
    for did, lfn in TWO:
        rule = await store.create_rule(database, ADMIN, RuleIn(did=did, copies=1, expression="tier=1"))
        await rule_locks.insert_locks(database, rule, [rule_locks.new_lock(rule, lfn, "T1-A", SIZE, "stuck",
                                                                           error="copy failed")])
        rules.append(await store.get_rule(database, rule["_id"]))
    fast = rule_settings(settings).rules
    moved = await asyncio.gather(*(repair(database, rule, fast) for rule in rules))

    assert sorted(count for count, _ in moved) == [0, 1]
    locks = sorted((lock["se"], lock["state"]) for lock in await database[rule_locks.LOCKS].find({}).to_list())
    assert locks == [("T1-A", "stuck"), ("T1-B", "replicating")]
    usage = {u["se"]: u["used_bytes"] for u in await quotas.quotas_and_usage(database, "root")}
    assert usage == {"T1-A": SIZE, "T1-B": SIZE, "T1-C": 0}


async def test_rules_of_two_accounts_placed_at_once_cannot_together_pass_their_vos_quota(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    # The VO's quota on T1-A has room for one of the two files; the accounts have none of their own.
    await two_datasets(database, tmp_path)
    room = VoSe(quota_bytes=SIZE + SIZE // 2)
    await put_vo(database, Vo(name="cta", roots=["/vo"], scopes=["vo"], ses={"T1-A": room}))
    rules = []
    for did, account in (("vo:p", "cta:ann"), ("vo:r", "cta:ben")):  # accounts are VO-qualified
        rule = await store.create_rule(database, ADMIN, RuleIn(did=did, copies=1, expression="T1-A"))
        assert rule["vo"] == "cta"
        await database[store.RULES].update_one({"_id": rule["_id"]}, {"$set": {"account": account}})
        rules.append(await store.get_rule(database, rule["_id"]))
    fast = rule_settings(settings).rules
    await asyncio.gather(*(evaluate(database, rule, fast) for rule in rules))

    def locked(rows: list[dict[str, object]]) -> int:
        return sum(int(str(row["used_bytes"])) for row in rows if row["se"] == "T1-A")

    assert locked(await quotas.quotas_and_usage(database)) <= SIZE + SIZE // 2
    for rule in rules:  # evaluated again one after the other: one of them is placed
        await evaluate(database, await store.get_rule(database, rule["_id"]), fast)
    assert locked(await quotas.quotas_and_usage(database)) == SIZE
    assert sorted([(await store.get_rule(database, rule["_id"]))["unplaced"] for rule in rules]) == [0, 1]
