"""The pilot factory against a real one-node Slurm cluster (tests.fixtures.slurm): jobs with
input data at SLURM-SITE run inside Slurm jobs the factory submitted, pilots leave when the
queue is empty, a cancelled pilot's job is rescheduled and done once, limits hold, a factory
that died between sbatch and recording the batch id does not submit again, and a factory
process SIGKILLed while its submissions are in flight and started again submits nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from catalogue.site_queues import SiteQueue, put_queue
from catalogue.sites import Site, put_site
from kernel.process import child_preexec, stop_processes
from tests.fixtures.api import RunningApi
from tests.fixtures.daemons import daemon_env
from tests.fixtures.grid import Grid, check_all, wait_for
from tests.fixtures.slurm import SlurmCluster
from wms import job_reads, pilot_records
from wms.batch.interface import PilotSpec, QueueConfig
from wms.batch.slurm import SlurmBackend
from wms.config import WmsSettings
from wms.daemons import JobWatchdog
from wms.pilot_factory import FactorySettings, PilotFactory

SITE = "SLURM-SITE"
SE = "SLURM-SITE-DISK"
USER = ("jobs.read", "jobs.write")
JOBS = 50


@pytest.fixture
async def slurm_site(grid: Grid, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Grid:
    """SLURM-SITE with a disk SE and a Slurm queue `batch` (3 waiting, 6 running at most)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.setenv("CAIRN_WMS_HEARTBEAT_S", "0.3")
    await put_site(grid.db, Site(name=SITE))
    await grid.add_se(SE, SITE)
    await put_queue(grid.db, SiteQueue(name="batch", site=SITE, backend="slurm", partition=slurm.partition,
                                       memory_mb=2048, max_waiting=3, max_running=6))
    return grid


def make_factory(api: RunningApi, grid: Grid, tmp_path: Path, **kw: Any) -> PilotFactory:
    config = FactorySettings(api_url=api.url, work_dir=tmp_path / "factory", per_cycle=4, poll_s=0.5,
                             pilot_idle_s=3, lost_after_s=5, **kw)
    return PilotFactory(grid.db, api.settings, config, api.issuer)


@contextlib.asynccontextmanager
async def running(*loops: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def checker(grid: Grid, config: WmsSettings) -> None:
    while True:
        await check_all(grid.db, config)
        await asyncio.sleep(0.3)


async def submit(api: RunningApi, descriptions: list[dict[str, Any]]) -> list[str]:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        return await alice.submit_jobs(descriptions)


def slurm_job(i: int) -> dict[str, Any]:
    return {"executable": "/bin/sh",
            "arguments": ["-c", f"cat in{i}.dat > out.txt; echo \"$SLURM_JOB_ID $CAIRN_SITE\" >> out.txt"],
            "input_data": [f"/cta/in/in{i}.dat"],
            "outputs": [{"path": "out.txt", "lfn": f"/cta/out/out{i}.txt", "se": SE}]}


async def slurm_jobs_named(slurm: SlurmCluster, prefix: str) -> set[str]:
    """Every Slurm job (queued, running or finished) whose name starts with prefix."""
    listing = await asyncio.to_thread(slurm.run, "squeue", "-h", "-o", "%j|%i")
    finished = await asyncio.to_thread(slurm.run, "sacct", "-c", "-n", "-P", "-o", "JobName,JobID")
    return {line.split("|")[1] for line in (listing + finished).splitlines()
            if line.startswith(prefix) and "|" in line}


async def test_jobs_run_inside_slurm_pilots_at_their_site_and_pilots_leave_when_done(
    api: RunningApi, slurm_site: Grid, slurm: SlurmCluster, wms_config: WmsSettings, tmp_path: Path
) -> None:
    grid = slurm_site
    for i in range(JOBS):
        await grid.add_file(f"/cta/in/in{i}.dat", f"input {i}\n".encode(), [SE])
    ids = await submit(api, [slurm_job(i) for i in range(JOBS)])
    factory = make_factory(api, grid, tmp_path)
    most_waiting = 0
    async with running(factory.run(), checker(grid, wms_config)):
        deadline = time.monotonic() + 240
        while True:
            found = await job_reads.get_jobs(grid.db, ids)
            pilots = await pilot_records.list_pilots(grid.db, site=SITE)
            most_waiting = max(most_waiting, sum(p["state"] in ("submitting", "waiting") for p in pilots))
            if all(j["state"] in ("done", "failed") for j in found):
                break
            assert time.monotonic() < deadline, [(j["_id"], j["state"], j["reason"]) for j in found]
            await asyncio.sleep(0.2)
        # With the queue empty, every pilot leaves by itself (idle 3 s) and the factory sees it end.
        deadline = time.monotonic() + 40
        while any(p["state"] not in ("done",) for p in await pilot_records.list_pilots(grid.db, site=SITE)):
            assert time.monotonic() < deadline, await pilot_records.list_pilots(grid.db, site=SITE)
            await asyncio.sleep(0.5)
    assert await asyncio.to_thread(slurm.run, "squeue", "-h", "-o", "%i") == ""
    assert 1 <= most_waiting <= 3
    pilots = {p["_id"]: p for p in await pilot_records.list_pilots(grid.db, site=SITE)}
    assert all(p["exit_code"] == 0 for p in pilots.values())
    for p in pilots.values():
        assert "no matching job" in await asyncio.to_thread(Path(p["log"]).read_text)
    assert sorted(j for p in pilots.values() for j in p["jobs"]) == sorted(ids)
    for i, job in enumerate(await wait_for(grid.db, ids, {"done"})):
        assert (job["state"], job["site"]) == ("done", SITE)
        assert job["pilot"] in pilots and job["batch_id"] == pilots[job["pilot"]]["batch_id"]
        content = (await grid.replica_bytes(f"/cta/out/out{i}.txt", SE)).decode()
        assert content == f"input {i}\n{job['batch_id']} {SITE}\n"  # the payload ran inside that Slurm job
        out = await grid.db["files"].find_one({"_id": f"/cta/out/out{i}.txt"})
        assert out is not None and out["ancestors"] == [f"/cta/in/in{i}.dat"]


async def test_a_cancelled_pilot_leaves_its_job_stalled_then_rescheduled_and_done_once(
    api: RunningApi, slurm_site: Grid, slurm: SlurmCluster, wms_config: WmsSettings, tmp_path: Path
) -> None:
    grid = slurm_site
    await grid.add_file("/cta/in/slow.dat", b"slow\n", [SE])
    # The first attempt sleeps until it is cancelled (a fixed nap was once over before a loaded
    # machine's scancel); a mark in /tmp, which any payload account may write, tells the second.
    first = Path(tempfile.mkdtemp(prefix="cairn-cancelled-")) / "first"
    os.chmod(first.parent, 0o1777)
    [job_id] = await submit(api, [{
        "executable": "/bin/sh",
        "arguments": ["-c", f"if mkdir {first} 2>/dev/null; then sleep 60; fi; "
                            "cat slow.dat > r.txt; echo $SLURM_JOB_ID >> r.txt"],
        "input_data": ["/cta/in/slow.dat"], "outputs": [{"path": "r.txt", "lfn": "/cta/out/slow.txt", "se": SE}]}])
    factory = make_factory(api, grid, tmp_path)
    watchdog = JobWatchdog(grid.db, wms_config)
    async with running(factory.run(), checker(grid, wms_config)):
        [job] = await wait_for(grid.db, [job_id], {"running"}, timeout_s=40)
        first_batch, first_pilot = job["batch_id"], job["pilot"]
        # Slurm signals the pilot and its payload at once: the job is not failed, it goes silent.
        await asyncio.to_thread(slurm.run, "scancel", first_batch)
        async with running(watchdog.run()):
            [job] = await wait_for(grid.db, [job_id], {"done", "failed"}, timeout_s=60)
        deadline = time.monotonic() + 20
        while (await pilot_records.get_pilot(grid.db, first_pilot))["state"] not in ("aborted", "failed"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
    assert (job["state"], job["attempt"], job["reschedules"]) == ("done", 2, 1), job["history"]
    assert job["batch_id"] != first_batch
    content = await grid.replica_bytes("/cta/out/slow.txt", SE)
    assert content == f"slow\n{job['batch_id']}\n".encode()
    assert await grid.db["files"].count_documents({"_id": "/cta/out/slow.txt"}) == 1
    shutil.rmtree(first.parent)


async def test_a_factory_that_died_after_sbatch_adopts_the_pilot_instead_of_submitting_again(
    api: RunningApi, slurm_site: Grid, slurm: SlurmCluster, wms_config: WmsSettings, tmp_path: Path
) -> None:
    grid = slurm_site
    await put_queue(grid.db, SiteQueue(name="adopt", site=SITE, backend="slurm", partition=slurm.partition,
                                       memory_mb=2048, max_waiting=2, max_running=6))
    await submit(api, [{"executable": "/bin/true", "requirements": {"sites": [SITE]}} for _ in range(2)])
    await check_all(grid.db, wms_config)
    factory = make_factory(api, grid, tmp_path)
    queue = QueueConfig(name="adopt", site=SITE, backend="slurm", partition=slurm.partition, memory_mb=2048,
                        max_waiting=2, max_running=6)
    # The dead factory's cycle: the intent was written and sbatch ran, the batch id was never recorded.
    spec = factory.pilot_spec(queue, f"{SITE}.adopt.orphan")
    await pilot_records.record_intents(grid.db, [{"_id": spec.name, "site": SITE, "queue": "adopt",
                                                  "backend": "slurm", "log": str(spec.log_path)}])
    [orphan_id] = await SlurmBackend().submit(queue, [spec])
    # The next factory adopts it, and submits only the one pilot the second job still needs.
    assert await factory.cycle(queue) == 1
    assert (await pilot_records.get_pilot(grid.db, spec.name))["batch_id"] == orphan_id
    assert await factory.cycle(queue) == 0
    docs = await pilot_records.list_pilots(grid.db, site=SITE)
    assert len(docs) == 2 and all(d["state"] in ("waiting", "running") for d in docs)
    # Exactly the two recorded pilots exist in Slurm under this queue's names: none was submitted twice.
    assert await slurm_jobs_named(slurm, f"{SITE}.adopt.") == {d["batch_id"] for d in docs}
    for d in docs:
        await SlurmBackend().kill(d["batch_id"])


async def test_an_unconfirmed_submission_that_never_reached_slurm_fails_after_the_grace_period(
    api: RunningApi, slurm_site: Grid, slurm: SlurmCluster, tmp_path: Path
) -> None:
    grid = slurm_site
    factory = make_factory(api, grid, tmp_path)
    queue = QueueConfig(name="batch", site=SITE, backend="slurm", partition=slurm.partition)
    await pilot_records.record_intents(grid.db, [{"_id": f"{SITE}.batch.ghost", "site": SITE, "queue": "batch",
                                                  "backend": "slurm", "log": str(tmp_path / "ghost.log")}])
    await factory.cycle(queue)
    assert (await pilot_records.get_pilot(grid.db, f"{SITE}.batch.ghost"))["state"] == "submitting"
    await grid.db[pilot_records.PILOTS].update_one({"_id": f"{SITE}.batch.ghost"},
                                                   {"$set": {"submitted_at": pilot_records.now().replace(year=2020)}})
    await factory.cycle(queue)
    ghost = await pilot_records.get_pilot(grid.db, f"{SITE}.batch.ghost")
    assert (ghost["state"], ghost["reason"]) == ("failed", "submission not confirmed by the batch system")


def factory_process(api: RunningApi, tmp_path: Path, number: int) -> subprocess.Popen[bytes]:
    """`cairn daemon pilot-factory` as its own process on the test's database and API."""
    env = daemon_env(api.settings)
    env.update({"CAIRN_PILOT_FACTORY_API_URL": api.url, "CAIRN_PILOT_FACTORY_WORK_DIR": str(tmp_path / "factory"),
                "CAIRN_PILOT_FACTORY_PER_CYCLE": "3", "CAIRN_PILOT_FACTORY_POLL_S": "0.3",
                "CAIRN_PILOT_FACTORY_LEASE_S": "2", "CAIRN_PILOT_FACTORY_LOST_AFTER_S": "5",
                "CAIRN_PILOT_FACTORY_PILOT_IDLE_S": "2", "CAIRN_WMS_HEARTBEAT_S": "0.3"})
    with (tmp_path / f"factory-{number}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "cairn", "daemon", "pilot-factory"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=child_preexec)


async def test_a_factory_sigkilled_while_submitting_and_restarted_submits_no_pilot_twice(
    api: RunningApi, slurm_site: Grid, slurm: SlurmCluster, wms_config: WmsSettings, tmp_path: Path
) -> None:
    grid = slurm_site
    await put_queue(grid.db, SiteQueue(name="batch", site=SITE, backend="slurm", enabled=False))
    await put_queue(grid.db, SiteQueue(name="crash", site=SITE, backend="slurm", partition=slurm.partition,
                                       memory_mb=1024, max_waiting=3, max_running=3))
    ids = await submit(api, [{"executable": "/bin/sh", "arguments": ["-c", "sleep 1"],
                              "requirements": {"sites": [SITE]}} for _ in range(8)])
    await check_all(grid.db, wms_config)
    seen_waiting = 0
    first = factory_process(api, tmp_path, 1)
    procs = [first]
    try:
        # The kill window: intents written (state submitting), sbatch in flight, no batch id recorded.
        deadline = time.monotonic() + 60
        while not await grid.db[pilot_records.PILOTS].count_documents({"queue": "crash", "state": "submitting"}):
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "factory-1.log").read_text()
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        unconfirmed = {p["_id"] for p in await pilot_records.list_pilots(grid.db, site=SITE)
                       if p["state"] == "submitting"}
        assert unconfirmed
        procs.append(factory_process(api, tmp_path, 2))
        async with running(checker(grid, wms_config)):
            deadline = time.monotonic() + 150
            while True:
                crash = [p for p in await pilot_records.list_pilots(grid.db, site=SITE) if p["queue"] == "crash"]
                seen_waiting = max(seen_waiting, sum(p["state"] in ("submitting", "waiting") for p in crash))
                found = await job_reads.get_jobs(grid.db, ids)
                if all(j["state"] == "done" for j in found) and all(
                        p["state"] not in ("submitting", "waiting", "running") for p in crash):
                    break
                assert procs[1].poll() is None and time.monotonic() < deadline, (
                    [(j["_id"], j["state"]) for j in found], [(p["_id"], p["state"]) for p in crash])
                await asyncio.sleep(0.1)
    finally:
        stop_processes(procs, timeout_s=15)
    assert seen_waiting <= 3
    pilots = {p["_id"]: p for p in await pilot_records.list_pilots(grid.db, site=SITE) if p["queue"] == "crash"}
    # Each unconfirmed submission was adopted (sbatch had reached Slurm) or failed (it had not).
    assert all(pilots[name]["state"] in ("done", "failed") for name in unconfirmed)
    in_slurm = await slurm_jobs_named(slurm, f"{SITE}.crash.")
    recorded = {p["batch_id"] for p in pilots.values() if p.get("batch_id")}
    assert in_slurm == recorded, (in_slurm, pilots)  # no Slurm job without its pilot document
    names = (await asyncio.to_thread(slurm.run, "sacct", "-c", "-n", "-P", "-o", "JobName")).split()
    crash_names = [n for n in names if n.startswith(f"{SITE}.crash.")]
    assert len(crash_names) == len(set(crash_names)) == len(recorded)  # no pilot submitted twice
    done = await job_reads.get_jobs(grid.db, ids)
    assert all(j["attempt"] == 1 for j in done), [j["history"] for j in done]
    assert sorted(j for p in pilots.values() for j in p["jobs"]) == sorted(ids)  # each job ran once, in a pilot


async def test_a_pilots_secrets_reach_it_as_its_environment_never_in_the_script_slurm_keeps(
    slurm: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A payload runs as the pilot's user, who may read the job's script back from Slurm (`scontrol
    # write batch_script`, or slurmd's spool): the pilot's token must not be in it. Nor does the
    # factory's own database address reach the pilot.
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.setenv("CAIRN_MONGODB_URI", "mongodb://factory-only")
    go, seen = tmp_path / "go", tmp_path / "seen"
    script = (f"for i in $(seq 300); do [ -e {go} ] && break; sleep 0.1; done\n"
              f'echo "$CAIRN_TOKEN|${{CAIRN_MONGODB_URI:-none}}" > {seen}\n')
    spec = PilotSpec(name="secrets-probe", script=script, env={"CAIRN_TOKEN": "pilot-token-4711"},
                     log_path=tmp_path / "probe.log", time_limit_s=120)
    queue = QueueConfig(name="batch", site=SITE, backend="slurm", partition=slurm.partition)
    [batch_id] = await SlurmBackend().submit(queue, [spec])
    kept = await asyncio.to_thread(slurm.run, "scontrol", "write", "batch_script", batch_id, "-")
    go.touch()
    deadline = time.monotonic() + 60
    while not seen.exists() or not seen.read_text().strip():
        assert time.monotonic() < deadline, slurm.logs()
        await asyncio.sleep(0.2)
    assert "seq 300" in kept  # the script Slurm kept, as submitted
    assert "pilot-token-4711" not in kept
    assert seen.read_text().strip() == "pilot-token-4711|none"
