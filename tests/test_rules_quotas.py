"""Quota accounting of rules: a file reached through two datasets of a container counts once,
in the check when the rule is created and in the bytes its locks charge."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import dataset_contents, datasets
from catalogue.datasets import DidIn
from kernel.db import Document
from kernel.errors import QuotaExceeded
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import quotas, store
from rules.evaluator import RuleEvaluator
from rules.quotas import QuotaIn
from rules.store import RuleIn
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
