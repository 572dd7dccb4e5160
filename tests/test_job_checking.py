"""The checker resolves input data in one catalogue query per batch and places each job."""

from __future__ import annotations

import asyncio

from pymongo import AsyncMongoClient, monitoring

from catalogue.storage_elements import StorageElementUpdate, update_storage_element
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.grid import Grid, check_all, submit_jobs
from transfers.request_reads import requests_for
from wms import checking, job_reads, jobs, task_queues
from wms.config import WmsSettings


async def test_each_job_waits_for_the_sites_holding_all_its_inputs(grid: Grid, wms_config: WmsSettings) -> None:
    await grid.add_file("/cta/a1", b"1", ["SITE-A-DISK"])
    await grid.add_file("/cta/a2", b"2", ["SITE-A-DISK", "SITE-B-DISK"])
    await grid.add_file("/cta/b1", b"3", ["SITE-B-DISK"])
    await grid.add_file("/cta/c1", b"4", ["SITE-C-DISK", "SITE-B-DISK"])
    ids = await submit_jobs(grid.db, ["/cta/a1", "/cta/a2"], ["/cta/b1", "/cta/a2"], ["/cta/c1"])
    await check_all(grid.db, wms_config)
    placed = {j["_id"]: j for j in await job_reads.get_jobs(grid.db, ids)}
    assert [placed[i]["state"] for i in ids] == ["waiting"] * 3
    assert [placed[i]["sites"] for i in ids] == [["SITE-A"], ["SITE-B"], ["SITE-B", "SITE-C"]]
    assert placed[ids[0]]["history"][-1]["reason"].endswith("(sites that hold all inputs)")


async def test_without_a_site_holding_everything_the_sites_with_most_inputs_are_chosen(
    grid: Grid, wms_config: WmsSettings
) -> None:
    await grid.add_file("/cta/x1", b"1", ["SITE-A-DISK"])
    await grid.add_file("/cta/x2", b"2", ["SITE-C-DISK"])
    await grid.add_file("/cta/x3", b"3", ["SITE-C-DISK"])
    [job_id] = await submit_jobs(grid.db, ["/cta/x1", "/cta/x2", "/cta/x3"])
    await check_all(grid.db, wms_config)
    job = await jobs.get_job(grid.db, job_id)
    assert (job["state"], job["sites"]) == ("waiting", ["SITE-C"])
    assert "hold the most inputs" in job["reason"]


async def test_inputs_that_exist_nowhere_fail_the_job_naming_them(grid: Grid, wms_config: WmsSettings) -> None:
    await grid.add_file("/cta/here", b"1", ["SITE-A-DISK"])
    await grid.db["files"].insert_one({"_id": "/cta/lost", "size": 1, "adler32": "00000000", "owner": "alice",
                                       "group": "cta", "mode": 0o644, "replicas": [
        {"se": "SITE-B-DISK", "url": "file:///nowhere", "status": "bad"}]})
    [job_id] = await submit_jobs(grid.db, ["/cta/here", "/cta/lost", "/cta/never-registered"])
    await check_all(grid.db, wms_config)
    job = await jobs.get_job(grid.db, job_id)
    assert job["state"] == "failed"
    assert job["missing"] == ["/cta/lost", "/cta/never-registered"]
    assert "/cta/lost" in job["reason"] and "/cta/never-registered" in job["reason"]


async def test_a_batch_of_jobs_costs_one_catalogue_query(
    grid: Grid, wms_config: WmsSettings, settings: Settings
) -> None:
    for n in range(6):
        await grid.add_file(f"/cta/f{n}", b"x", ["SITE-A-DISK" if n % 2 else "SITE-B-DISK"])
    await submit_jobs(grid.db, *[[f"/cta/f{n}"] for n in range(6)])
    listener = FindCounter()
    watched: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, event_listeners=[listener])
    try:
        assert await checking.check_batch(watched[settings.database], wms_config, "t") == 6
    finally:
        await watched.close()
    assert listener.files_finds == 1


async def test_requirement_sites_narrow_the_choice(grid: Grid, wms_config: WmsSettings) -> None:
    await grid.add_file("/cta/ab", b"1", ["SITE-A-DISK", "SITE-B-DISK"])
    [job_id] = await submit_jobs(grid.db, ["/cta/ab"], requirements={"sites": ["SITE-B"]})
    await check_all(grid.db, wms_config)
    assert (await jobs.get_job(grid.db, job_id))["sites"] == ["SITE-B"]


async def test_jobs_with_the_same_needs_share_a_task_queue(grid: Grid, wms_config: WmsSettings) -> None:
    await grid.add_file("/cta/q1", b"1", ["SITE-A-DISK"])
    await grid.add_file("/cta/q2", b"2", ["SITE-A-DISK"])
    await submit_jobs(grid.db, ["/cta/q1"], ["/cta/q2"], [], priority=7)
    await check_all(grid.db, wms_config)
    queues = await task_queues.all_queues(grid.db)
    assert sorted((q["sites"], q["waiting"], q["priority"]) for q in queues) == [(["*"], 1, 7), (["SITE-A"], 2, 7)]


async def test_tape_only_inputs_are_requested_for_staging_and_the_job_waits(
    grid: Grid, wms_config: WmsSettings
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape")
    await grid.add_file("/cta/raw/t1", b"tape bytes", ["SITE-C-TAPE"])
    await grid.add_file("/cta/raw/d1", b"disk bytes", ["SITE-B-DISK"])
    [job_id] = await submit_jobs(grid.db, ["/cta/raw/t1", "/cta/raw/d1"])
    await check_all(grid.db, wms_config)
    job = await jobs.get_job(grid.db, job_id)
    assert job["state"] == "staging"
    [request] = await requests_for(grid.db, f"job:{job_id}")
    assert (request["lfn"], request["dest_se"], request["source_se"]) == ("/cta/raw/t1", "SITE-B-DISK", "SITE-C-TAPE")

    # Still on tape only: a recheck keeps it staging without a second request.
    await asyncio.sleep(wms_config.staging_recheck_s)
    await check_all(grid.db, wms_config)
    assert (await jobs.get_job(grid.db, job_id))["state"] == "staging"
    assert len(await requests_for(grid.db, f"job:{job_id}")) == 1

    # The copy lands on disk at SITE-B (what the transfer machinery records when it is done).
    await grid.db["files"].update_one({"_id": "/cta/raw/t1"}, {"$push": {"replicas": {
        "se": "SITE-B-DISK", "url": grid.url("SITE-B-DISK", "/cta/raw/t1"), "status": "available"}}})
    await asyncio.sleep(wms_config.staging_recheck_s)
    await check_all(grid.db, wms_config)
    job = await jobs.get_job(grid.db, job_id)
    assert (job["state"], job.get("sites")) == ("waiting", ["SITE-B"]), job["reason"]
    assert [h["state"] for h in job["history"]] == ["received", "checking", "staging", "waiting"]


async def test_tape_only_inputs_are_staged_to_writable_disk_at_the_tape_site(
    grid: Grid, wms_config: WmsSettings
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape")
    await grid.add_se("SITE-C-DISK2", "SITE-C")
    await update_storage_element(grid.db, "SITE-C-DISK", StorageElementUpdate(write_enabled=False))
    await grid.add_file("/cta/raw/t3", b"tape bytes", ["SITE-C-TAPE"])
    [job_id] = await submit_jobs(grid.db, ["/cta/raw/t3"])
    await check_all(grid.db, wms_config)
    job = await jobs.get_job(grid.db, job_id)
    assert (job["state"], job["staging_to"]) == ("staging", "SITE-C-DISK2")

    await update_storage_element(grid.db, "SITE-C-DISK2", StorageElementUpdate(write_enabled=False))
    [job_id] = await submit_jobs(grid.db, ["/cta/raw/t3"])
    await check_all(grid.db, wms_config)
    assert (await jobs.get_job(grid.db, job_id))["staging_to"] == "SITE-A-DISK"


async def test_a_failed_staging_request_fails_the_job(grid: Grid, wms_config: WmsSettings) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape")
    await grid.add_file("/cta/raw/t2", b"tape bytes", ["SITE-C-TAPE"])
    [job_id] = await submit_jobs(grid.db, ["/cta/raw/t2"])
    await check_all(grid.db, wms_config)
    await grid.db["transfer_requests"].update_many(
        {"requester": f"job:{job_id}"}, {"$set": {"state": "failed", "last_error": "tape drive on fire"}})
    await asyncio.sleep(wms_config.staging_recheck_s)
    await check_all(grid.db, wms_config)
    job = await jobs.get_job(grid.db, job_id)
    assert job["state"] == "failed"
    assert "tape drive on fire" in job["reason"]


class FindCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.files_finds = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == "files":
            self.files_finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
