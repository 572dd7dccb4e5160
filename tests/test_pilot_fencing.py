"""Pilot outputs are fenced by attempt: a real `cairn pilot` stopped with SIGSTOP, declared
stalled, its job rescheduled and finished by another pilot, then resumed with SIGCONT, writes
nothing that the catalogue points to, and the server refuses its upload slot and registration."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kernel.errors import Conflict
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, PilotProcess, adler32_hex, check_all, start_pilot, wait_for, watchdog_reschedules
from wms import jobs
from wms.config import WmsSettings
from wms.outputs import attempt_url

LFN = "/cta/out/fenced.txt"


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_resumed_stale_pilot_cannot_overwrite_the_output_of_the_current_attempt(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path
) -> None:
    description = {"executable": "/bin/sh", "arguments": ["-c", "sleep 2; echo attempt $CAIRN_JOB_ATTEMPT > r.txt"],
                   "outputs": [{"path": "r.txt", "lfn": LFN, "se": "SITE-A-DISK"}]}
    async with api.client(api.token(sub="alice", scopes=("jobs.read", "jobs.write"))) as alice:
        [job_id] = await alice.submit_jobs([description])
    await check_all(grid.db, wms_config)
    stale = start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    [running] = await wait_for(grid.db, [job_id], {"running"}, pilots=pilots)
    stale_pilot = running["pilot"]
    os.kill(stale.process.pid, signal.SIGSTOP)
    try:
        await watchdog_reschedules(grid.db, wms_config, job_id)
        await check_all(grid.db, wms_config)
        start_pilot(api, "SITE-B", tmp_path, wms_config, pilots)
        [done] = await wait_for(grid.db, [job_id], {"done", "failed"}, pilots=pilots)
        assert (done["state"], done["attempt"]) == ("done", 2), done["reason"]
        # The stale attempt's payload ran on while its pilot was stopped: its output is ready.
        stale_output = tmp_path / "work-SITE-A-0" / f"job-{job_id}-1" / "r.txt"
        await until(stale_output.is_file, "the stale payload never finished")

        async with api.client(api.token(sub="pilot-SITE-A", scopes=("jobs.pilot",))) as as_stale:
            with pytest.raises(Conflict):
                await as_stale.job_output_slots(job_id, pilot=stale_pilot, attempt=1)
            with pytest.raises(Conflict):
                await as_stale.register_job_outputs(job_id, pilot=stale_pilot, attempt=1, files=[{
                    "lfn": LFN, "url": attempt_url(grid.url("SITE-A-DISK", LFN), job_id, 1), "size": 10,
                    "adler32": adler32_hex(b"attempt 1\n")}])
    finally:
        os.kill(stale.process.pid, signal.SIGCONT)
    await until(lambda: "was taken from this pilot" in stale.output(), "the resumed pilot did not drop its job")
    await asyncio.sleep(1)  # anything the resumed pilot would still do

    record = await grid.db["files"].find_one({"_id": LFN})
    assert record is not None and record["produced_by"] == {"job": job_id, "attempt": 2}
    stored = await grid.replica_bytes(LFN, "SITE-A-DISK")
    assert stored == b"attempt 2\n"
    assert (record["size"], record["adler32"]) == (len(stored), adler32_hex(stored))
    # The stale attempt wrote nothing at all: neither at its own URL nor at the LFN's plain URL.
    assert not (grid.se_roots["SITE-A-DISK"] / f"cta/out/fenced.txt!job-{job_id}-attempt-1").exists()
    assert not (grid.se_roots["SITE-A-DISK"] / "cta/out/fenced.txt").exists()
    assert (await jobs.get_job(grid.db, job_id))["state"] == "done"
