"""A job that leaves `staging` without its copies (killed, or failed) withdraws the transfers it
asked for, through the real daemons: a recall under way for it alone is cancelled and its tape
pin released; one another job or a user also asked for goes on for them; a withdrawal cut short
between the job's move and its withdrawal is finished by the job watchdog."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, wait_for
from tests.test_job_staging import USER, data_daemons, submit
from transfers.queueing import submit_transfers
from transfers.requests import get_request
from wms import jobs, stage_requests
from wms.config import WmsSettings
from wms.daemons import JobWatchdog
from wms.stage_requests import requester_of

RAW = "/cta/raw/run9.raw"
READ_RAW = {"executable": "/bin/cat", "arguments": ["run9.raw"], "input_data": [RAW]}


async def request_when(db: AsyncDatabase[Document], request_id: str, wanted: dict[str, Any],
                       timeout_s: float = 30) -> Document:
    """The request once its fields hold the `wanted` values."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await get_request(db, request_id)
        if found is not None and all(found.get(k) == v for k, v in wanted.items()):
            return found
        assert time.monotonic() < deadline, f"request {request_id} not {wanted}: {found}"
        await asyncio.sleep(0.2)


async def staging_job(api: RunningApi, grid: Grid) -> tuple[str, str]:
    """alice's job staging RAW, whose recall is under way (it takes a minute); (job, request)."""
    [job] = await wait_for(grid.db, [await submit(api, READ_RAW)], {"staging"})
    [request_id] = job["transfer_requests"]
    await request_when(grid.db, request_id, {"state": "staging"})
    return job["_id"], request_id


async def kill(api: RunningApi, job_id: str) -> None:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        await alice.kill_job(job_id)


async def test_a_killed_staging_job_cancels_its_recall_and_its_pin_is_released(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings,
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape", stage_delay_s=60)
    await grid.add_file(RAW, b"raw\n", ["SITE-C-TAPE"])
    async with data_daemons(settings, grid.db, wms_config):
        job_id, request_id = await staging_job(api, grid)
        await kill(api, job_id)
        await request_when(grid.db, request_id, {"state": "cancelled", "release": "released"})
    [job] = await wait_for(grid.db, [job_id], {"killed"})
    assert job["transfer_requests"] == [request_id] and stage_requests.HELD not in job


async def test_a_killed_staging_job_leaves_a_shared_recall_to_the_job_that_joined_it(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings,
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape", stage_delay_s=60)
    await grid.add_file(RAW, b"raw\n", ["SITE-C-TAPE"])
    async with data_daemons(settings, grid.db, wms_config):
        first, request_id = await staging_job(api, grid)
        [second] = await wait_for(grid.db, [await submit(api, READ_RAW)], {"staging"})
        assert second["transfer_requests"] == [request_id]  # it joined the first's
        await kill(api, first)
        await wait_for(grid.db, [first], {"killed"})
        handed = await request_when(grid.db, request_id, {"requester": requester_of(second["_id"])})
        assert (handed["state"], handed.get("joined")) == ("staging", [])
        await kill(api, second["_id"])
        await request_when(grid.db, request_id, {"state": "cancelled", "release": "released"})


async def test_a_killed_staging_job_leaves_a_users_recall_it_joined_going(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings,
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape", stage_delay_s=60)
    await grid.add_file(RAW, b"raw\n", ["SITE-C-TAPE"])
    bobs = await submit_transfers(grid.db, [{"lfn": RAW, "dest_se": "SITE-C-DISK", "source_se": "SITE-C-TAPE"}],
                                  requester="user:bob")
    request_id = bobs["successful"][RAW]
    async with data_daemons(settings, grid.db, wms_config):
        job_id, joined = await staging_job(api, grid)
        assert joined == request_id
        await kill(api, job_id)
        await wait_for(grid.db, [job_id], {"killed"})
        await asyncio.sleep(1)  # the stager's polls go on
    kept = await get_request(grid.db, request_id)
    assert kept is not None
    assert (kept["state"], kept["requester"], kept.get("joined")) == ("staging", "user:bob", [])


async def test_a_job_failing_for_one_lost_tape_input_cancels_the_recall_of_the_other(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings,
) -> None:
    tape = await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape", stage_delay_s=60)
    await grid.add_file(RAW, b"raw\n", ["SITE-C-TAPE"])
    await grid.add_file("/cta/raw/lost.raw", b"gone\n", ["SITE-C-TAPE"])
    (tape / "cta/raw/lost.raw").unlink()  # the catalogue still lists it; the library lost the cartridge
    async with data_daemons(settings, grid.db, wms_config):
        job_id = await submit(api, {**READ_RAW, "input_data": [RAW, "/cta/raw/lost.raw"]})
        [job] = await wait_for(grid.db, [job_id], {"failed"}, timeout_s=60)
        assert job["reason"].startswith("staging failed: /cta/raw/lost.raw:"), job["reason"]
        others = [r for r in [await get_request(grid.db, rid) for rid in job["transfer_requests"]]
                  if r is not None and r["lfn"] == RAW]
        assert len(others) == 1
        await request_when(grid.db, others[0]["_id"], {"state": "cancelled", "release": "released"})


async def test_a_withdrawal_cut_short_by_a_stopped_process_is_finished_by_the_watchdog(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings,
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape", stage_delay_s=60)
    await grid.add_file(RAW, b"raw\n", ["SITE-C-TAPE"])
    async with data_daemons(settings, grid.db, wms_config):
        job_id, request_id = await staging_job(api, grid)
        # The kill's first write (the job's move, as `control.kill` makes it: not while a checker
        # holds the job), and its process stopped before the withdrawal.
        for _ in range(100):
            moved = await jobs.transition(grid.db, job_id, ["staging"], "killed", "killed by request",
                                          guard={claims.OWNER: None})
            if moved is not None:
                break
            await asyncio.sleep(0.05)
        assert moved is not None
        assert await JobWatchdog(grid.db, wms_config).run_once() >= 1
        await request_when(grid.db, request_id, {"state": "cancelled", "release": "released"})
    assert stage_requests.HELD not in await jobs.get_job(grid.db, job_id)
    assert await JobWatchdog(grid.db, wms_config).run_once() == 0  # withdrawn once
