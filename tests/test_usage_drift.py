"""Usage stays exact through the paths that remove or replace replicas outside the catalogue's
own routes: a deletion request, the reaper's space cleanup, a rule's expiry, a job's output
written again. `usage rebuild --dry-run` (catalogue.usage.rebuild, fix=False) finds no drift."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.replica_urls import se_url
from catalogue.usage import rebuild, se_usage
from kernel.db import Document
from kernel.settings import Settings
from rules import rule_edits, store
from rules.cleaner import RuleCleaner
from rules.rule_models import RuleIn, RuleUpdate
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, run_until, run_until_ok, tiered_ses
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, replica_status, run_until_drained
from transfers import queueing
from transfers.reaper import Reaper
from transfers.worker import TransferWorker
from wms.outputs import attempt_url, register_outputs

KIB = 1024


async def assert_no_drift(db: AsyncDatabase[Document]) -> None:
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def test_replicate_then_delete_the_copy_by_request_leaves_no_drift(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    disk1, disk2 = disk_se("LOCAL-DISK1", tmp_path / "d1"), disk_se("LOCAL-DISK2", tmp_path / "d2")
    await add_ses(database, disk1, disk2)
    lfns = [f"/vo/up/f{i}" for i in range(3)]
    await put_files(database, [disk1], lfns, size=KIB)
    fast = fast_settings(settings)
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "LOCAL-DISK2"} for lfn in lfns], requester="t")
    await run_until_drained(database, TransferWorker(fast, database))
    assert [await replica_status(database, lfn, "LOCAL-DISK2") for lfn in lfns] == ["available"] * 3
    await queueing.submit(database, "delete", [{"lfn": lfn, "dest_se": "LOCAL-DISK2"} for lfn in lfns], requester="t")
    await Reaper(fast, database).run(max_cycles=1)
    assert [await replica_status(database, lfn, "LOCAL-DISK2") for lfn in lfns] == [None] * 3
    assert {u["se"]: u["replicas"] for u in await se_usage(database)}.get("LOCAL-DISK2", 0) == 0
    await assert_no_drift(database)


async def test_the_reapers_watermark_cleanup_leaves_no_drift(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    full = disk_se("FULL", tmp_path / "full", total_bytes=4 * KIB, high_water=0.9, low_water=0.5)
    other = disk_se("OTHER", tmp_path / "other")
    await add_ses(database, full, other)
    await put_files(database, [full, other], [f"/vo/w/f{i}" for i in range(4)], size=KIB)
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    assert {u["se"]: u["bytes"] for u in await se_usage(database)}["FULL"] == 2 * KIB
    await assert_no_drift(database)


async def test_a_rules_expiry_and_the_deletion_of_its_copies_leave_no_drift(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await tiered_ses(database, tmp_path)
    lfns = [f"/vo/exp/f{i}" for i in range(4)]
    await dataset_on_src(database, "vo:exp", lfns)
    rule = await store.create_rule(database, ADMIN, RuleIn(did="vo:exp", copies=1, expression="T1-A"))
    fast = rule_settings(settings)

    await run_until_ok(database, fast, rule["_id"])
    await rule_edits.update_rule(database, ADMIN, rule["_id"], RuleUpdate(lifetime_s=1))
    await asyncio.sleep(1.2)

    async def gone() -> bool:
        return await database[store.RULES].count_documents({"_id": rule["_id"]}) == 0

    await run_until(gone, [RuleCleaner(fast, database)])
    await assert_no_drift(database)
    await queueing.submit(database, "delete", [{"lfn": lfn, "dest_se": "T1-A"} for lfn in lfns], requester="t")
    await Reaper(fast, database).run(max_cycles=1)
    assert [await replica_status(database, lfn, "T1-A") for lfn in lfns] == [None] * 4
    await assert_no_drift(database)


async def test_a_jobs_output_written_again_by_a_later_attempt_leaves_no_drift(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    se1, se2 = disk_se("SE-1", tmp_path / "s1"), disk_se("SE-2", tmp_path / "s2")
    await add_ses(database, se1, se2)
    job: Document = {"_id": "42", "attempt": 1, "owner": "root", "group": "admin", "vo": "cta", "scopes": ["admin"],
                     "description": {"outputs": [{"path": "o.root", "lfn": "/vo/out/o.root", "se": "SE-1"}]}}
    first = await register_outputs(database, job, [{"lfn": "/vo/out/o.root", "se": "SE-1",
                                                    "url": attempt_url(se_url(se1, "/vo/out/o.root"), "42", 1),
                                                    "size": 100, "adler32": "00000001"}], ["/vo/in"])
    assert first["successful"] == {"/vo/out/o.root": "registered"}
    before = (await database["files"].find_one({"_id": "/vo/out/o.root"}))["version"]
    second = await register_outputs(database, {**job, "attempt": 2}, [
        {"lfn": "/vo/out/o.root", "se": "SE-2", "url": attempt_url(se_url(se2, "/vo/out/o.root"), "42", 2),
         "size": 250, "adler32": "00000002"}], ["/vo/in"])
    assert second["successful"] == {"/vo/out/o.root": "updated"}
    doc = await database["files"].find_one({"_id": "/vo/out/o.root"})
    assert (doc["size"], [r["se"] for r in doc["replicas"]], doc["produced_by"]) == (250, ["SE-2"],
                                                                                    {"job": "42", "attempt": 2})
    assert doc["version"] > before
    usage = {u["se"]: (u["replicas"], u["bytes"]) for u in await se_usage(database)}
    assert usage.get("SE-1", (0, 0)) == (0, 0) and usage["SE-2"] == (1, 250)
    await assert_no_drift(database)

