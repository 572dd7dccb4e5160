"""One job the checker or the watchdog cannot process fails alone, saying why, and the pass goes on
to the other jobs (a job stored with an input LFN that no longer validates, or a description
missing a field, raised out of every checker pass, so no job of its batch was ever placed; one
the watchdog met stopped its pass, so no later job was stalled or queued). A database outage is
no job's fault: the pass stops and the daemon backs off, the job left as it was."""

from __future__ import annotations

import datetime as dt

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all, submit_jobs
from tests.fixtures.tcp_gate import TcpGate, cut_short
from wms import job_reads, jobs
from wms.config import WmsSettings
from wms.daemons import JobWatchdog


async def states_of(db: AsyncDatabase[Document], ids: list[str]) -> list[str]:
    found = {j["_id"]: j["state"] for j in await job_reads.get_jobs(db, ids)}
    return [found[i] for i in ids]


async def at_pilots(api: RunningApi, grid: Grid, wms_config: WmsSettings, count: int) -> list[str]:
    """`count` jobs matched to pilots that then went silent, the first silent longest."""
    ids = await submit_jobs(grid.db, *[[] for _ in range(count)])
    await check_all(grid.db, wms_config)
    async with api.client(api.token(sub="pilot", scopes=("jobs.pilot",))) as pilot:
        matched = [(await pilot.match_job(pilot=f"p{n}", site="SITE-A"))["id"] for n in range(count)]
    assert sorted(matched) == sorted(ids)
    for n, job_id in enumerate(ids):
        heard = jobs.now() - dt.timedelta(seconds=60 - n)
        await grid.db["jobs"].update_one({"_id": job_id}, {"$set": {"heartbeat_at": heard}})
    return ids


@pytest.mark.parametrize("stored", [
    {"$set": {"description.input_data": ["cta/no-longer-absolute"]}},
    {"$unset": {"description.requirements": ""}},
], ids=["input-lfn-no-longer-valid", "description-missing-a-field"])
async def test_a_job_the_checker_cannot_process_fails_alone(
    grid: Grid, wms_config: WmsSettings, stored: Document,
) -> None:
    await grid.add_file("/cta/in", b"x", ["SITE-A-DISK"])
    ids = await submit_jobs(grid.db, ["/cta/in"], ["/cta/in"], ["/cta/in"])
    await grid.db["jobs"].update_one({"_id": ids[1]}, stored)  # stored before a check existed
    assert await check_all(grid.db, wms_config) == 3
    assert await states_of(grid.db, ids) == ["waiting", "failed", "waiting"]
    bad = await jobs.get_job(grid.db, ids[1])
    assert bad["reason"].startswith("job-checker could not process the job: "), bad["reason"]
    assert bad["lease_owner"] is None


async def test_a_silent_job_the_watchdog_cannot_process_fails_alone(
    api: RunningApi, grid: Grid, wms_config: WmsSettings,
) -> None:
    ids = await at_pilots(api, grid, wms_config, 2)
    await grid.db["jobs"].update_one({"_id": ids[0]}, {"$unset": {"attempt": ""}})  # a record that no longer reads
    assert await JobWatchdog(grid.db, wms_config).run_once() == 2
    assert await states_of(grid.db, ids) == ["failed", "received"]  # the other rescheduled
    reason = (await jobs.get_job(grid.db, ids[0]))["reason"]
    assert reason == "job-watchdog could not process the job: unexpected error: KeyError"


async def test_an_unqueued_job_the_watchdog_cannot_queue_fails_alone(grid: Grid, wms_config: WmsSettings) -> None:
    ids = await submit_jobs(grid.db, [], [])
    await check_all(grid.db, wms_config)
    # A checker that died between recording 'waiting' and queueing the jobs.
    await grid.db["task_queue_entries"].delete_many({})
    await grid.db["task_queues"].update_many({}, {"$set": {"waiting": 0}})
    past = jobs.now() - dt.timedelta(minutes=5)
    await grid.db["jobs"].update_many({"_id": {"$in": ids}}, {"$set": {"enqueued": False, "updated": past}})
    await grid.db["jobs"].update_one({"_id": ids[0]}, {"$unset": {"description.requirements": ""}})
    assert await JobWatchdog(grid.db, wms_config).run_once() == 2
    assert await states_of(grid.db, ids) == ["failed", "waiting"]
    assert (await jobs.get_job(grid.db, ids[1]))["enqueued"] is True
    assert (await jobs.get_job(grid.db, ids[0]))["reason"].startswith("job-watchdog could not process the job: ")


async def test_a_database_outage_during_a_jobs_work_stops_the_watchdogs_pass(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, db_gate: TcpGate,
) -> None:
    [job_id] = await at_pilots(api, grid, wms_config, 1)
    # the gate closes once the job is declared stalled: the rest of its work meets the outage
    await cut_short(db_gate, grid.db.name, "findAndModify", "jobs",
                    lambda db: JobWatchdog(db, wms_config).run_once())
    job = await jobs.get_job(grid.db, job_id)
    assert job["state"] == "stalled" and "could not process" not in job["reason"], job["reason"]
