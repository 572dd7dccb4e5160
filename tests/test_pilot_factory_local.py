"""The local backend (what `cairn up` uses): the factory starts pilots as local processes for a
queue with waiting jobs, within its limits; they run the jobs and leave when idle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from catalogue.site_queues import SiteQueue, put_queue
from catalogue.sites import Site, put_site
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all, wait_for
from wms import pilot_records
from wms.config import WmsSettings
from wms.pilot_factory import FactorySettings, PilotFactory

USER = ("jobs.read", "jobs.write")


async def test_local_pilots_run_the_jobs_of_their_site_and_leave_when_idle(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAIRN_WMS_HEARTBEAT_S", "0.3")
    await put_site(grid.db, Site(name="SITE-B"))
    await put_queue(grid.db, SiteQueue(name="local", site="SITE-B", backend="local", max_waiting=2, max_running=2))
    for i in range(4):
        await grid.add_file(f"/cta/l{i}.dat", b"x\n", ["SITE-B-DISK"])
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        ids = await alice.submit_jobs([{"executable": "/bin/sh", "arguments": ["-c", "echo $CAIRN_SITE"],
                                        "input_data": [f"/cta/l{i}.dat"]} for i in range(4)])
    await check_all(grid.db, wms_config)
    factory = PilotFactory(grid.db, api.settings, FactorySettings(
        api_url=api.url, work_dir=tmp_path / "factory", poll_s=0.3, pilot_idle_s=2), api.issuer)
    task = asyncio.create_task(factory.run())
    try:
        most = 0
        deadline = time.monotonic() + 60
        while True:
            docs = await pilot_records.list_pilots(grid.db, site="SITE-B")
            most = max(most, sum(d["state"] in ("submitting", "waiting", "running") for d in docs))
            if docs and all(d["state"] == "done" for d in docs):
                break
            assert time.monotonic() < deadline, docs
            await asyncio.sleep(0.2)
    finally:
        factory.stop()
        await task
    done = await wait_for(grid.db, ids, {"done"})
    assert {j["site"] for j in done} == {"SITE-B"} and [j["stdout"] for j in done] == ["SITE-B\n"] * 4
    assert 1 <= most <= 2  # never more than max_running (2) pilots at once
    assert sorted(j for d in docs for j in d["jobs"]) == sorted(ids)
    assert all(d["batch_id"].startswith("local-") and d["exit_code"] == 0 for d in docs)
