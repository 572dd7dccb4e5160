"""One user's subscription cannot stop the others: its rule template has a rule's bounds (a
template a rule could not take was accepted, and then stopped the subscriber at the first
dataset it matched, for every subscription), a bad template stored anyway is recorded as the
subscription's error, and a name pattern is matched in linear time (`^(a+)+$` against a name of
forty a's held the subscriber for minutes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from kernel.errors import CairnError
from rules import subscription_counts
from rules.subscriber import RuleSubscriber
from tests.fixtures.api import RunningApi
from tests.fixtures.rules import dataset_on_src, tiered_ses

USER = ("rules.read", "rules.write", "catalogue.read", "catalogue.write")


@pytest.fixture
async def tiered(database: AsyncDatabase[Document], tmp_path: Path) -> list[str]:
    return await tiered_ses(database, tmp_path)


async def _rules_on(admin: Client) -> set[str]:
    return {r["did"] for r in await admin.list_rules()}


@pytest.mark.parametrize("template", [{"activity": "a" * 65}, {"weight": "w" * 65}, {"comment": "c" * 2001}])
async def test_a_template_a_rule_could_not_take_is_refused(api: RunningApi, tiered: list[str],
                                                           template: dict[str, str]) -> None:
    async with api.client(api.token(scopes=USER)) as alice:
        with pytest.raises(CairnError) as refused:
            await alice.add_subscription("poison", {"copies": 1, "expression": "tier=1", **template})
    assert refused.value.status == 400


async def test_a_bad_stored_template_is_an_error_of_its_own_and_the_others_go_on(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tiered: list[str],
) -> None:
    await admin.add_subscription("good", {"copies": 1, "expression": "tier=1"}, filter={"name_pattern": "^raw"})
    await admin.add_subscription("aaa-poison", {"copies": 1, "expression": "tier=1"}, filter={"name_pattern": "^raw"})
    # stored before templates had a rule's bounds
    await database["subscriptions"].update_one({"_id": "aaa-poison"}, {"$set": {"rule.activity": "a" * 65}})
    await dataset_on_src(database, "vo:raw1", ["/vo/raw1/f"])
    await RuleSubscriber(api.settings, database).run(max_cycles=3)
    assert await _rules_on(admin) == {"vo:raw1"}
    poison = await database["subscriptions"].find_one({"_id": "aaa-poison"})
    assert poison is not None and "the subscription's rule is not valid" in poison["errors"]["vo:raw1"]


async def test_a_filter_stored_before_its_checks_is_an_error_of_its_own_and_the_others_go_on(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tiered: list[str],
) -> None:
    await admin.add_subscription("good", {"copies": 1, "expression": "tier=1"}, filter={"name_pattern": "^raw"})
    await admin.add_subscription("aaa-poison", {"copies": 1, "expression": "tier=1"}, filter={"name_pattern": "^raw"})
    # stored before patterns were RE2's (a backreference)
    await database["subscriptions"].update_one({"_id": "aaa-poison"}, {"$set": {"filter.name_pattern": r"(a)\1"}})
    await dataset_on_src(database, "vo:raw1", ["/vo/raw1/f"])
    await RuleSubscriber(api.settings, database).run(max_cycles=3)
    assert await _rules_on(admin) == {"vo:raw1"}
    poison = await database["subscriptions"].find_one({"_id": "aaa-poison"})
    assert poison is not None and "not applied" in poison["errors"]["subscription"], poison


async def test_a_name_pattern_is_matched_in_linear_time(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tiered: list[str],
) -> None:
    async with api.client(api.token(scopes=USER)) as alice:
        await alice.add_subscription("evil", {"copies": 1, "expression": "tier=1"}, filter={"name_pattern": "^(a+)+$"})
        for refused_pattern in (r"(a)\1", "(?=a)b", "a{1000}{1000}"):
            with pytest.raises(CairnError) as refused:
                await alice.add_subscription("bad", {"copies": 1, "expression": "tier=1"},
                                             filter={"name_pattern": refused_pattern})
            assert refused.value.status == 400 and "not a regular expression this service takes" in \
                refused.value.message, refused.value.message
    await admin.add_subscription("good", {"copies": 1, "expression": "tier=1"}, filter={"name_pattern": "^a+$"})
    await dataset_on_src(database, "vo:" + "a" * 40 + "-", ["/vo/evil/f"])
    await dataset_on_src(database, "vo:" + "a" * 40, ["/vo/evil/g"])
    async with asyncio.timeout(20):
        await RuleSubscriber(api.settings, database).run(max_cycles=3)
    assert await _rules_on(admin) == {"vo:" + "a" * 40}


async def test_the_refusals_kept_per_subscription_are_bounded(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tiered: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subscription_counts, "MAX_ERRORS", 2)
    await admin.add_subscription("over", {"copies": 9, "expression": "tier=1"})  # 3 tier-1 SEs: never placeable
    for i in range(4):
        await dataset_on_src(database, f"vo:d{i}", [f"/vo/d{i}/f"])
    await RuleSubscriber(api.settings, database).run(max_cycles=3)
    over = await database["subscriptions"].find_one({"_id": "over"})
    assert over is not None and len(over["errors"]) == 2 and over["errors_dropped"] == 2, over
