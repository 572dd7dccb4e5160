"""Quota usage (`account_usage`) adds what clients claim (file sizes, unchecked against storage):
past the int64 range it is stored at its bound and marked saturated (`kernel.counters`), never
refused by the database, which failed every later charge and release of that account on that SE
(every rule made or removed there). The rebuild recounts a saturated sum the same way, and a
quota's reservation of more than the range refuses the lock instead of failing."""

from __future__ import annotations

from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.bounds import INT64_MAX
from kernel.counters import SATURATED
from kernel.db import Document
from kernel.settings import Settings
from rules import quota_rebuild, quotas
from rules.cleaner import RuleCleaner
from rules.evaluator import RuleEvaluator
from rules.locks import LOCKS
from tests.fixtures.api import RunningApi
from tests.fixtures.rules import rule_settings, run_until, tiered_ses

HUGE = 2**62  # a claimed size: three of them pass the int64 range


async def _dataset_of_huge_files(api: RunningApi, did: str, count: int) -> None:
    lfns = [f"/vo/{did.split(':')[1]}/f{i}" for i in range(count)]
    async with api.client() as client:
        registered = await client.register_files([
            {"lfn": lfn, "size": HUGE, "adler32": "0000abcd", "replicas": [{"se": "SRC"}]} for lfn in lfns])
        assert not registered["failed"], registered["failed"]
        await client.create_did(did)
        await client.attach(did, lfns=lfns)


async def _evaluate(settings: Settings, database: AsyncDatabase[Document]) -> None:
    await RuleEvaluator(rule_settings(settings), database).run(max_cycles=2)


async def _usage(database: AsyncDatabase[Document], se: str = "SRC") -> Document:
    doc = await database[quotas.ACCOUNT_USAGE].find_one({"_id": quotas.key("root", se)})
    assert doc is not None
    return doc


async def test_rules_locking_more_than_the_int64_range_saturate_the_usage_and_stay_removable(
    api: RunningApi, database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path, tier1=1)
    for did, files in (("vo:one", 1), ("vo:two", 1), ("vo:three", 3)):
        await _dataset_of_huge_files(api, did, files)
    async with api.client() as client:
        made = [await client.add_rule("vo:one", 1, "SRC")]
        await _evaluate(settings, database)
        assert int((await _usage(database))["bytes"]) == HUGE
        made.append(await client.add_rule("vo:two", 1, "SRC"))  # 2^62 + 2^62: the sum passes the range
        await _evaluate(settings, database)
        usage = await _usage(database)
        assert (int(usage["bytes"]), int(usage["files"]), usage.get(SATURATED)) == (INT64_MAX, 2, True)
        made.append(await client.add_rule("vo:three", 1, "SRC"))  # one charge of 3 * 2^62: so does the delta
        await _evaluate(settings, database)
        assert await database[LOCKS].count_documents({}) == 5
        usage = await _usage(database)
        assert (int(usage["bytes"]), int(usage["files"]), usage.get(SATURATED)) == (INT64_MAX, 5, True)
        rows = await client.quotas("root")
        assert [(r["se"], r["used_bytes"], r.get("saturated")) for r in rows] == [("SRC", INT64_MAX, True)]
        for rule in made:
            await client.delete_rule(rule["id"])

    async def released() -> bool:  # the cleaner releases the rules' locks: give-backs that write
        return await database[LOCKS].count_documents({}) == 0

    await run_until(released, [RuleCleaner(rule_settings(settings), database)], timeout_s=30)
    usage = await _usage(database)
    assert int(usage["files"]) == 0 and usage.get(SATURATED) is True  # not exact any more: rebuild
    report = await quota_rebuild.rebuild(database)
    assert report["drifted"] == 1 and report["moved"] == []
    assert await database[quotas.ACCOUNT_USAGE].find_one({"_id": quotas.key("root", "SRC")}) is None


async def test_the_rebuild_sets_a_sum_past_the_range_at_its_bound_and_takes_the_mark_off_once_within(
    api: RunningApi, database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path, tier1=1)
    await _dataset_of_huge_files(api, "vo:four", 4)
    async with api.client() as client:
        await client.add_rule("vo:four", 1, "SRC")
    await _evaluate(settings, database)
    await database[quotas.ACCOUNT_USAGE].delete_many({})  # drifted (a call cut short, say)
    report = await quota_rebuild.rebuild(database)
    assert report["drifted"] == 1 and report["moved"] == []
    usage = await _usage(database)
    assert (int(usage["bytes"]), int(usage["files"]), usage.get(SATURATED)) == (INT64_MAX, 4, True)
    assert (await quota_rebuild.rebuild(database))["drifted"] == 0  # saturated as recounted: no drift
    await database[LOCKS].delete_many({"lfn": {"$ne": "/vo/four/f0"}})
    report = await quota_rebuild.rebuild(database)
    assert report["drifted"] == 1 and report["moved"] == []
    usage = await _usage(database)
    assert (int(usage["bytes"]), int(usage["files"]), usage.get(SATURATED)) == (HUGE, 1, None)


async def test_a_reservation_past_the_range_under_a_quota_is_refused_not_failed(
    database: AsyncDatabase[Document],
) -> None:
    await quotas.set_quota(database, quotas.QuotaIn(account="root", se="SRC", bytes=INT64_MAX))
    assert await quotas.reserve(database, "root", {"SRC": (3, 3 * HUGE)}) == {"SRC"}
    assert await database[quotas.ACCOUNT_USAGE].count_documents({"bytes": {"$gt": 0}}) == 0
    assert await quotas.reserve(database, "root", {"SRC": (1, HUGE)}) == set()
    assert await quotas.reserve(database, "root", {"SRC": (1, HUGE - 1)}) == set()
    assert await quotas.reserve(database, "root", {"SRC": (1, 1)}) == {"SRC"}  # 2^63 - 1 is full
    assert int((await _usage(database))["bytes"]) == INT64_MAX
