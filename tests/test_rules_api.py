"""Rules over HTTP, the SDK and the CLI: bad input is a 4xx with the reason and creates nothing;
quotas refuse an oversized rule; `cairn se resolve`, `rule add|list|show|delete`, `quota`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from kernel.errors import CairnError, Forbidden, InvalidInput, NotFound, QuotaExceeded
from rules.subscriber import RuleSubscriber
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.rules import dataset_on_src, tiered_ses


@pytest.fixture
async def tiered(database: AsyncDatabase[Document], tmp_path: Path) -> list[str]:
    tier1 = await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", [f"/vo/ds/f{i}" for i in range(4)], size=1000)
    return tier1


@pytest.mark.parametrize(("body", "error", "words"), [
    ({"did": "vo:ds", "copies": 1, "expression": "tier=1&("}, InvalidInput, "position"),
    ({"did": "vo:ds", "copies": 1, "expression": "tier=7"}, InvalidInput, "matches no storage element"),
    ({"did": "vo:ds", "copies": 4, "expression": "tier=1"}, InvalidInput, "matches only 3"),
    ({"did": "vo:nope", "copies": 1, "expression": "tier=1"}, NotFound, "does not exist"),
    ({"did": "/vo/ds/missing", "copies": 1, "expression": "tier=1"}, NotFound, "does not exist"),
    ({"did": "vo:ds", "copies": 0, "expression": "tier=1"}, InvalidInput, "copies"),
])
async def test_bad_rules_are_refused_with_the_reason_and_nothing_is_created(
    api: RunningApi, admin: Client, tiered: list[str], body: dict[str, object], error: type[CairnError], words: str,
) -> None:
    with pytest.raises(error) as raised:
        await admin.add_rule(**body)  # type: ignore[arg-type]
    assert words in raised.value.message
    assert await admin.list_rules() == []


async def test_a_rule_over_quota_is_refused_and_usage_is_shown(
    api: RunningApi, admin: Client, tiered: list[str],
) -> None:
    for se in tiered[:2]:
        await admin.set_quota("alice", se, 3000)
    async with api.client(api.token(scopes=("rules.read", "rules.write"))) as alice:
        with pytest.raises(QuotaExceeded) as raised:
            await alice.add_rule("vo:ds", 2, "T1-A|T1-B")
        assert "on 2 SE(s)" in raised.value.message and raised.value.details["needed_bytes"] == 4000
        assert await alice.list_rules() == []
        rule = await alice.add_rule("vo:ds", 1, "tier=1")
        assert rule["account"] == "alice" and rule["state"] == "replicating"
        rows = await alice.quotas()
        assert {(r["se"], r["quota_bytes"]) for r in rows} == {("T1-A", 3000), ("T1-B", 3000)}
        with pytest.raises(Forbidden):
            await alice.set_quota("alice", "T1-C", 1)


async def test_rules_need_their_scopes_and_belong_to_their_account(
    api: RunningApi, admin: Client, tiered: list[str],
) -> None:
    rule = await admin.add_rule("vo:ds", 1, "tier=1", comment="keep")
    async with api.client(api.token(scopes=("catalogue.read",))) as reader:
        with pytest.raises(Forbidden):
            await reader.get_rule(rule["id"])
    async with api.client(api.token(scopes=("rules.read", "rules.write"))) as alice:
        assert (await alice.get_rule(rule["id"]))["comment"] == "keep"
        with pytest.raises(Forbidden):
            await alice.delete_rule(rule["id"])


async def test_the_cli_resolves_expressions_and_manages_rules(
    api: RunningApi, admin: Client, tiered: list[str],
) -> None:
    token = api.admin_token
    resolved = await run_cli(api.url, token, "se", "resolve", "tier=1\\T1-B", "--json")
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout) == ["T1-A", "T1-C"]
    bad = await run_cli(api.url, token, "se", "resolve", "tier=1&(")
    assert bad.returncode == 2 and "position" in bad.stderr
    added = await run_cli(api.url, token, "rule", "add", "vo:ds", "--copies", "2", "-e", "tier=1", "--lifetime",
                          "3600", "--locked", "--json")
    assert added.returncode == 0, added.stderr
    rule = json.loads(added.stdout)
    listed = await run_cli(api.url, token, "rule", "list", "--did", "vo:ds", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [rule["id"]]
    shown = await run_cli(api.url, token, "rule", "show", rule["id"])
    assert shown.returncode == 0 and "replicating" in shown.stdout
    refused = await run_cli(api.url, token, "rule", "delete", rule["id"])
    assert refused.returncode == 2 and "locked" in refused.stderr
    unlocked = await run_cli(api.url, token, "rule", "update", rule["id"], "--unlocked", "--json")
    assert json.loads(unlocked.stdout)["locked"] is False
    deleted = await run_cli(api.url, token, "rule", "delete", rule["id"], "--json")
    assert deleted.returncode == 0 and json.loads(deleted.stdout)["expires_at"] is not None
    # a deleted rule is being removed: no change brings it back (the cleaner removes it anyway)
    revived = await run_cli(api.url, token, "rule", "update", rule["id"], "--lifetime", "3600")
    assert revived.returncode != 0 and "has expired and is being removed" in revived.stderr, revived.stderr
    quota = await run_cli(api.url, token, "quota", "set", "root", "T1-A", "5000")
    assert quota.returncode == 0, quota.stderr
    usage = await run_cli(api.url, token, "quota", "list", "--account", "root", "--json")
    assert json.loads(usage.stdout) == [{"account": "root", "se": "T1-A", "quota_bytes": 5000, "used_bytes": 0,
                                         "used_files": 0}]


async def test_a_new_dataset_matching_a_subscription_gets_its_rule(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tiered: list[str],
) -> None:
    await admin.add_subscription("raw-to-tier1", {"copies": 2, "expression": "tier=1", "lifetime_s": 600},
                                 filter={"scopes": ["vo"], "name_pattern": "^raw"}, account="alice")
    await dataset_on_src(database, "vo:raw1", ["/vo/raw1/f"])
    await dataset_on_src(database, "vo:other", ["/vo/other/f"])
    await RuleSubscriber(api.settings, database).run(max_cycles=2)
    made = await admin.list_rules()
    assert [(r["did"], r["account"], r["copies"], r["subscription"]) for r in made] == [
        ("vo:raw1", "alice", 2, "raw-to-tier1")]
    listed = await run_cli(api.url, api.admin_token, "subscription", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(s["name"], s["rules_created"]) for s in json.loads(listed.stdout)] == [("raw-to-tier1", 1)]
    with pytest.raises(InvalidInput):
        await admin.add_subscription("bad", {"copies": 1, "expression": "tier=(("})


async def test_a_subscription_makes_no_rule_on_a_dataset_its_subscriber_may_not_rule_on(
    api: RunningApi, admin: Client, database: AsyncDatabase[Document], tiered: list[str],
) -> None:
    async with api.client(api.token(scopes=("rules.read", "rules.write"))) as alice:
        await alice.add_subscription("alice-all", {"copies": 1, "expression": "tier=1", "lifetime_s": 600},
                                     filter={"scopes": ["vo"]})
    await dataset_on_src(database, "vo:readable", ["/vo/readable/f"])
    await dataset_on_src(database, "vo:secret", ["/vo/secret/f"])
    await admin.chmod("/vo/secret", 0o700)  # alice can no longer read the file in it
    await RuleSubscriber(api.settings, database).run(max_cycles=2)
    assert [r["did"] for r in await admin.list_rules()] == ["vo:readable"]
    [stored] = await database["subscriptions"].find({"_id": "alice-all"}).to_list()
    assert stored["rules_created"] == 1 and list(stored["errors"]) == ["vo:secret"]
