"""Jobs whose inputs are only on tape, through the real daemons: the job checker asks for the
copies, the transfer worker and the stager bring the files online and copy them to disk, the
checker releases the job to the site now holding them, and a real pilot there runs it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.daemon import Daemon
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, PilotProcess, adler32_hex, start_pilot, wait_for
from tests.fixtures.transfers import fast_settings
from transfers.request_reads import requests_for
from transfers.stager import Stager
from transfers.worker import TransferWorker
from wms.checking import requester_of
from wms.config import WmsSettings
from wms.daemons import JobChecker

USER = ("jobs.read", "jobs.write")


@contextlib.asynccontextmanager
async def data_daemons(settings: Settings, db: AsyncDatabase[Document], config: WmsSettings) -> AsyncIterator[None]:
    """A job checker, a transfer worker and a stager running in this process until the block ends."""
    fast = fast_settings(settings)
    daemons: list[Daemon] = [JobChecker(db, config), TransferWorker(fast, db), Stager(fast, db)]
    for daemon in daemons:
        daemon.idle_sleep_s = min(daemon.idle_sleep_s, 0.2)
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        yield
    finally:
        for daemon in daemons:
            daemon.stop()
        await asyncio.gather(*tasks)


async def submit(api: RunningApi, description: dict[str, Any]) -> str:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id] = await alice.submit_jobs([description])
    return job_id


async def test_a_job_reading_a_file_only_on_tape_runs_once_the_daemons_staged_it_to_disk(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings, pilots: list[PilotProcess],
    tmp_path: Path,
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape", stage_delay_s=1.0)
    await grid.add_file("/cta/raw/run7.raw", b"raw event bytes\n", ["SITE-C-TAPE"])
    job_id = await submit(api, {
        "executable": "/bin/sh", "arguments": ["-c", "cat run7.raw > out.txt; echo at $CAIRN_SITE >> out.txt"],
        "input_data": ["/cta/raw/run7.raw"],
        "outputs": [{"path": "out.txt", "lfn": "/cta/out/run7.txt", "se": "SITE-A-DISK"}]})
    for site in ("SITE-A", "SITE-B", "SITE-C"):
        start_pilot(api, site, tmp_path, wms_config, pilots)

    async with data_daemons(settings, grid.db, wms_config):
        [job] = await wait_for(grid.db, [job_id], {"done", "failed"}, timeout_s=90, pilots=pilots)

    [request] = await requests_for(grid.db, requester_of(job_id))
    assert (request["state"], request["result"]["source_se"]) == ("done", "SITE-C-TAPE")
    assert request["vo"] == job["vo"]  # the job's VO's administrators see the transfers it asked for
    # No disk holds any input, so the copy goes to disk at the tape's own site, and the job with it.
    site, staged_to = "SITE-C", request["dest_se"]
    assert (staged_to, job["state"], job["site"]) == ("SITE-C-DISK", "done", site), job["reason"]
    states = [h["state"] for h in job["history"]]
    assert states == ["received", "checking", "staging", "waiting", "matched", "running", "done"]
    raw = await grid.db["files"].find_one({"_id": "/cta/raw/run7.raw"})
    assert raw is not None
    assert {(r["se"], r["status"]) for r in raw["replicas"]} == {("SITE-C-TAPE", "available"),
                                                                 (staged_to, "available")}
    assert (grid.se_roots[staged_to] / "cta/raw/run7.raw").read_bytes() == b"raw event bytes\n"
    out = await grid.db["files"].find_one({"_id": "/cta/out/run7.txt"})
    assert out is not None
    content = await grid.replica_bytes("/cta/out/run7.txt", "SITE-A-DISK")
    assert content == f"raw event bytes\nat {site}\n".encode()
    assert (out["ancestors"], out["adler32"]) == (["/cta/raw/run7.raw"], adler32_hex(content))


async def test_a_tape_input_is_staged_to_the_site_holding_the_other_inputs_and_the_job_runs_there(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings, pilots: list[PilotProcess],
    tmp_path: Path,
) -> None:
    await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape")
    await grid.add_file("/cta/raw/run1.raw", b"raw bytes\n", ["SITE-C-TAPE"])
    await grid.add_file("/cta/raw/calib.db", b"calibration\n", ["SITE-B-DISK"])
    job_id = await submit(api, {"executable": "/bin/sh", "arguments": ["-c", "cat calib.db run1.raw"],
                                "input_data": ["/cta/raw/run1.raw", "/cta/raw/calib.db"]})
    for site in ("SITE-A", "SITE-B", "SITE-C"):
        start_pilot(api, site, tmp_path, wms_config, pilots)

    async with data_daemons(settings, grid.db, wms_config):
        [job] = await wait_for(grid.db, [job_id], {"done", "failed"}, timeout_s=90, pilots=pilots)

    assert (job["state"], job["site"], job["stdout"]) == ("done", "SITE-B", "calibration\nraw bytes\n")
    [request] = await requests_for(grid.db, requester_of(job_id))
    assert (request["state"], request["dest_se"]) == ("done", "SITE-B-DISK")


async def test_every_job_waiting_for_a_file_lost_from_tape_fails_naming_why(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings,
) -> None:
    tape = await grid.add_se("SITE-C-TAPE", "SITE-C", kind="tape")
    await grid.add_file("/cta/raw/lost.raw", b"gone\n", ["SITE-C-TAPE"])
    (tape / "cta/raw/lost.raw").unlink()  # the catalogue still lists it; the library lost the cartridge
    reading = {"executable": "/bin/cat", "arguments": ["lost.raw"], "input_data": ["/cta/raw/lost.raw"]}
    first, second = await submit(api, reading), await submit(api, reading)

    async with data_daemons(settings, grid.db, wms_config):
        found = await wait_for(grid.db, [first, second], {"done", "failed"}, timeout_s=60)

    # Both jobs wait on one request (the second reuses the first's); its failure fails both.
    assert [j["transfer_requests"] for j in found] == [found[0]["transfer_requests"]] * 2
    for job in found:
        assert job["state"] == "failed"
        assert job["reason"].startswith("staging failed: /cta/raw/lost.raw:"), job["reason"]
