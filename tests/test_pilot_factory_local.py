"""The local backend (what `cairn up` uses): the factory starts pilots as local processes for a
queue with waiting jobs, within its limits; they run the jobs and leave when idle."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from catalogue.site_queues import SiteQueue, put_queue
from catalogue.sites import Site, put_site
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.grid import Grid, check_all, factory_until_pilots_done, wait_for
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


async def test_queues_pilots_and_job_links_through_the_cli(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = api.admin_token
    await put_site(grid.db, Site(name="SITE-C"))
    made = await run_cli(api.url, admin, "site", "queue-set", "SITE-C", "short", "--max-waiting", "1",
                         "--max-running", "1", "--memory-mb", "2048", "--tag", "fast")
    assert made.returncode == 0, made.stderr
    missing = await run_cli(api.url, admin, "site", "queue-set", "NO-SITE", "short")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    [queue] = json.loads((await run_cli(api.url, admin, "site", "queues", "--json")).stdout)
    assert (queue["site"], queue["name"], queue["max_waiting"], queue["tags"]) == ("SITE-C", "short", 1, ["fast"])
    assert "short" in (await run_cli(api.url, admin, "site", "queues")).stdout
    await grid.add_file("/cta/c.dat", b"c\n", ["SITE-C-DISK"])
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/true", "input_data": ["/cta/c.dat"]}])
    await check_all(grid.db, wms_config)
    await factory_until_pilots_done(api, grid.db, tmp_path / "factory", "SITE-C")
    alice_token = api.token(sub="alice", scopes=USER)
    [listed] = json.loads((await run_cli(api.url, alice_token, "pilots", "list", "--json")).stdout)
    shown = json.loads((await run_cli(api.url, alice_token, "pilots", "show", listed["name"], "--json")).stdout)
    assert (shown["jobs"], shown["queue"], shown["state"]) == ([job_id], "short", "done")
    status = json.loads((await run_cli(api.url, alice_token, "job", "status", job_id, "--json")).stdout)
    assert (status["pilot"], status["batch_id"]) == (listed["name"], listed["batch_id"])
    assert listed["batch_id"] in (await run_cli(api.url, alice_token, "job", "status", job_id)).stdout
    logs = await run_cli(api.url, admin, "pilots", "logs", listed["name"])
    assert "no matching job" in logs.stdout
    refused = await run_cli(api.url, alice_token, "pilots", "logs", listed["name"])
    assert refused.returncode != 0 and "for administrators" in refused.stderr
