"""A job checker cut off from the database (as if stopped) between asking for a staging job's
copies and recording their ids on the job leaves nothing running for nobody: the job is noted as
asking before the ask, so its kill, or a later pass that places it without them, withdraws them."""

from __future__ import annotations

import datetime as dt

import pytest

from kernel.errors import ServiceUnavailable
from kernel.settings import Settings
from tests.fixtures.grid import Grid, submit_jobs
from tests.fixtures.tcp_gate import CutAfter, TcpGate
from transfers.request_reads import requests_for
from transfers.requests import REQUESTS
from wms import checker_claims, checking, control, jobs
from wms.config import WmsSettings
from wms.stage_requests import requester_of

RAW = "/cta/raw/run9.raw"


async def _checker_cut_after_its_ask(grid: Grid, db_gate: TcpGate, settings: Settings,
                                     config: WmsSettings) -> str:
    """alice's job reading RAW (on tape only), whose checker pass asked for its copy and was
    cut off before recording it; its claim freed as the watchdog frees a dead pass's. The job."""
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape", stage_delay_s=60)
    await grid.add_file(RAW, b"raw\n", ["SITE-C-TAPE"])
    [job_id] = await submit_jobs(grid.db, [RAW])
    cut = CutAfter(db_gate, "insert", REQUESTS)
    client = cut.client()
    try:
        with pytest.raises(ServiceUnavailable):
            await checking.check_batch(client[settings.database], config, "dying")
    finally:
        await client.close()
        await db_gate.open()
    assert cut.done, "the checker asked for no copy"
    [asked] = await requests_for(grid.db, requester_of(job_id))
    assert asked["state"] == "queued"
    job = await jobs.get_job(grid.db, job_id)
    assert job["state"] == "checking" and not job.get("transfer_requests")  # asked, not recorded
    later = jobs.now() + dt.timedelta(seconds=checker_claims.CHECK_LEASE_S + 1)
    assert await checker_claims.clear_stale_claims(grid.db, later) == 1
    return job_id


async def test_a_kill_after_a_checker_cut_short_withdraws_the_copy_it_asked_for(
    grid: Grid, db_gate: TcpGate, settings: Settings, wms_config: WmsSettings,
) -> None:
    job_id = await _checker_cut_after_its_ask(grid, db_gate, settings, wms_config)
    assert (await control.kill(grid.db, await jobs.get_job(grid.db, job_id), "by request"))["state"] == "killed"
    [request] = await requests_for(grid.db, requester_of(job_id))
    assert request["state"] == "cancelled"


async def test_a_job_placed_without_the_copy_its_cut_short_check_asked_for_withdraws_it(
    grid: Grid, db_gate: TcpGate, settings: Settings, wms_config: WmsSettings,
) -> None:
    job_id = await _checker_cut_after_its_ask(grid, db_gate, settings, wms_config)
    await grid.add_se("SITE-B-DISK2", "SITE-B")  # meanwhile another copy reached a disk
    target = grid.se_roots["SITE-B-DISK2"] / RAW.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"raw\n")
    await grid.db["files"].update_one({"_id": RAW}, {"$push": {"replicas": {
        "se": "SITE-B-DISK2", "url": grid.url("SITE-B-DISK2", RAW), "status": "available"}}})
    assert await checking.check_batch(grid.db, wms_config, "next") == 1
    assert (await jobs.get_job(grid.db, job_id))["state"] == "waiting"
    [request] = await requests_for(grid.db, requester_of(job_id))
    assert request["state"] == "cancelled"
