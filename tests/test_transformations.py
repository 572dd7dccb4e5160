"""Transformations end to end with real pilots on `file://` SEs, as a production made from one
YAML file with the CLI: an mc step makes files, a processing step turns them (5 per task) into
dl1 files with metadata and provenance, a merge step groups those by run; new input registered
while it runs is fed through the change feed; the transformation daemons run as processes and
are SIGKILLed mid-way without a file processed twice or a task lost. Retries: a task that
fails twice then succeeds, a file that stays problematic."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from kernel.db import Document
from kernel.settings import Settings
from productions.daemons import TransformationFeeder, TransformationMonitor, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.daemons import DaemonProcesses, daemon_env
from tests.fixtures.grid import Grid, PilotProcess, adler32_hex, check_all, start_pilot
from wms.config import WmsSettings

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write", "transfers.read", "transfers.write")
SE = "SITE-A-DISK"
ONLY_A = {"sites": ["SITE-A"]}


def simulate() -> dict[str, Any]:
    outputs = [{"path": f"s{i}.sim", "lfn": f"/cta/sim/t%(task)s-{i}.sim", "se": SE,
                "meta": {"type": "sim", "run": "%(task)s"}} for i in range(5)]
    script = "for i in 0 1 2 3 4; do echo sim task %(task)s file $i > s$i.sim; done"
    return {"name": "simulate", "type": "mc", "max_tasks": 2,
            "job": {"executable": "/bin/sh", "arguments": ["-c", script], "outputs": outputs,
                    "requirements": ONLY_A}}


def process() -> dict[str, Any]:
    return {"name": "process", "input_query": "type=sim", "input_path": "/cta", "grouping": {"count": 5},
            "job": {"executable": "/bin/sh", "arguments": ["-c", "cat $(ls *.sim | sort) > out.dl1"],
                    "outputs": [{"path": "out.dl1", "lfn": "/cta/dl1/p-%(task)s.dl1", "se": SE,
                                 "meta": {"type": "dl1", "run": "%(run)s"}}]}}


def merge() -> dict[str, Any]:
    return {"name": "merge", "input_query": "type=dl1", "input_path": "/cta",
            "grouping": {"plugin": "meta", "key": "run", "count": 100},
            "job": {"executable": "/bin/sh", "arguments": ["-c", "cat $(ls *.dl1 | sort) > merged.dat"],
                    "outputs": [{"path": "merged.dat", "lfn": "/cta/merged/run-%(run)s.dat", "se": SE,
                                 "meta": {"type": "merged", "run": "%(run)s"}}]}}


def replicate() -> dict[str, Any]:
    return {"name": "replicate", "type": "replication", "input_query": "type=dl1", "input_path": "/cta",
            "request": {"ses": "tier=1", "copies": 2}}


async def until(check: Callable[[], Awaitable[bool]], what: str, *, timeout_s: float = 60,
                between: Callable[[], Awaitable[Any]] | None = None, logs: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()[-4000:]}")
        if between is not None:
            await between()
        await asyncio.sleep(0.3)


async def show(client: Client, tid: str) -> dict[str, Any]:
    return await client.get_transformation(tid)


async def register_sim_file(client: Client, grid: Grid, lfn: str, run: int) -> None:
    data = f"late sim {lfn}\n".encode()
    target = grid.se_roots[SE] / lfn.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    result = await client.register_files([{"lfn": lfn, "size": len(data), "adler32": adler32_hex(data),
                                           "replicas": [{"se": SE, "url": grid.url(SE, lfn)}],
                                           "meta": {"type": "sim", "run": run}}])
    assert not result["failed"], result


async def test_simulate_process_merge_with_late_input_and_killed_daemons(
    api: RunningApi, grid: Grid, settings: Settings, wms_config: WmsSettings, pilots: list[PilotProcess],
    tmp_path: Path,
) -> None:
    for name, site in (("T1-B", "SITE-B"), ("T1-C", "SITE-C")):
        path = await grid.add_se(name, site)
        await put_storage_element(grid.db, StorageElement(name=name, site=site, attributes={"tier": 1},
                                                          protocols=[Protocol(scheme="file", prefix=str(path))]))
    env = daemon_env(settings)
    env["CAIRN_PRODUCTIONS__LEASE_S"] = "8"  # a killed daemon's lease runs out in 8 s, not a minute
    names = ("transformation-feeder", "transformation-tasks", "transformation-monitor", "job-checker", "transfers")
    daemons = {n: DaemonProcesses(n, env, tmp_path) for n in names}
    for d in daemons.values():
        d.start()
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)

    def logs() -> str:
        return "\n".join(d.logs() for d in daemons.values()) + "\n".join(p.output()[-2000:] for p in pilots)

    token = api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)
    prod_file = tmp_path / "prod.yaml"
    prod_file.write_text(yaml.safe_dump({"name": "cta-chain", "steps": [simulate(), process(), merge(), replicate()]}))
    try:
        added = await run_cli(api.url, token, "production", "add", str(prod_file), "--json")
        assert added.returncode == 0, added.stderr
        production = json.loads(added.stdout)
        sim, proc, mrg, rep = (s["id"] for s in production["steps"])
        async with api.client(token) as alice:

            async def processed_at_least(tid: str, n: int) -> bool:
                return (await show(alice, tid))["files"]["processed"] >= n

            await until(lambda: processed_at_least(proc, 5), "the first process task", logs=logs)
            # mid-way: kill the three transformation daemons, register new input, restart them
            killed = ("transformation-feeder", "transformation-tasks", "transformation-monitor")
            for name in killed:
                daemons[name].kill(daemons[name].procs[0])
            for i in range(5):
                await register_sim_file(alice, grid, f"/cta/sim/late/l{i}.sim", 9)
            for name in killed:
                daemons[name].start()
                daemons[name].start()  # two instances share the work by leases
            # a lease the killed daemons held runs out first (CAIRN_PRODUCTIONS__LEASE_S)
            await until(lambda: processed_at_least(proc, 15), "all 15 sim files processed", timeout_s=150,
                        logs=logs)
            assert (await show(alice, sim))["state"] == "completed"
            # the merge step is flushed by the production once the steps before it are quiet
            await until(lambda: processed_at_least(mrg, 3), "merge by run", logs=logs)
            await until(lambda: processed_at_least(rep, 3), "2 copies of each dl1 file on tier=1", logs=logs)
            proc_view, merge_tasks = await show(alice, proc), await alice.transformation_tasks(mrg)
            proc_tasks = await alice.transformation_tasks(proc)
        status = await run_cli(api.url, token, "production", "status", production["id"], "--json")
        assert status.returncode == 0, status.stderr
        progress = json.loads(status.stdout)
    finally:
        for d in daemons.values():
            d.stop_all()

    assert progress["status"] == "done" and progress["problematic"] == 0
    assert [(s["name"], s["files"]["processed"], s["tasks"]["done"]) for s in progress["steps"]] == [
        ("simulate", 0, 2), ("process", 15, 3), ("merge", 3, 3), ("replicate", 3, 3)]
    # every sim file in exactly one task, each task one job, all done
    assert proc_view["files"] == {"unused": 0, "assigned": 0, "processed": 15, "problematic": 0, "removed": 0}
    assert [t["state"] for t in proc_tasks] == ["done"] * 3
    members = Counter(lfn for t in proc_tasks for lfn in t["files"])
    assert len(members) == 15 and set(members.values()) == {1}
    assert len({t["job"] for t in proc_tasks}) == 3
    db = grid.db
    for step, tasks_done in (("simulate", 2), ("process", 3), ("merge", 3)):  # one job per task, none lost
        assert await db["jobs"].count_documents({"name": {"$regex": f"^{step}-"}}) == tasks_done
    # outputs carry the template's metadata and their provenance; dl1 files have 2 copies on tier=1
    dl1 = await db["files"].find({"meta.type": "dl1"}).sort("_id", 1).to_list()
    for d in dl1:
        assert sorted(r["se"] for r in d["replicas"] if r["status"] == "available") == ["SITE-A-DISK", "T1-B", "T1-C"]
        assert await grid.replica_bytes(d["_id"], "T1-C") == await grid.replica_bytes(d["_id"], SE)
    assert sorted(d["meta"]["run"] for d in dl1) == [1, 2, 9]
    for d in dl1:
        assert len(d["ancestors"]) == 5
        assert {(await db["files"].find_one({"_id": a}))["meta"]["run"] for a in d["ancestors"]} == {d["meta"]["run"]}
    assert sorted((t["env"]["run"], len(t["files"]), t["state"]) for t in merge_tasks) == [
        (1, 1, "done"), (2, 1, "done"), (9, 1, "done")]
    merged = await db["files"].find_one({"_id": "/cta/merged/run-9.dat"})
    assert merged is not None and merged["meta"] == {"type": "merged", "run": 9}
    [late_dl1] = [d for d in dl1 if d["meta"]["run"] == 9]
    assert merged["ancestors"] == [late_dl1["_id"]]
    assert sorted(late_dl1["ancestors"]) == [f"/cta/sim/late/l{i}.sim" for i in range(5)]
    content = await grid.replica_bytes("/cta/merged/run-9.dat", SE)
    assert content == b"".join(f"late sim /cta/sim/late/l{i}.sim\n".encode() for i in range(5))


async def daemon_passes(db: AsyncDatabase[Document], config: WmsSettings) -> None:
    """One pass of each transformation daemon and of the job checker, in this process."""
    for daemon in (TransformationFeeder(db), TransformationTasks(db), TransformationMonitor(db)):
        await daemon.run_once()
    await check_all(db, config)


async def test_a_task_failing_twice_then_succeeds_and_a_bad_file_stays_problematic(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path,
) -> None:
    for name in ("good1", "good2", "bad"):
        await grid.add_file(f"/cta/raw/{name}.raw", f"{name}\n".encode(), [SE], meta={"type": "raw"})
    counter = tmp_path / "attempts"
    flaky = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
             "[ $n -ge 3 ] || exit 2; cat *.raw > o.txt")
    strict = "[ -e bad.raw ] && exit 3; cat *.raw > o.txt"
    spec = {"input_query": "type=raw", "input_path": "/cta", "grouping": {"count": 1}}
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        flaky_id = (await alice.add_transformation({
            **spec, "name": "flaky", "max_tasks": 1,
            "max_attempts": 3, "job": {"executable": "/bin/sh", "arguments": ["-c", flaky], "outputs": [
                {"path": "o.txt", "lfn": "/cta/flaky/%(task)s.txt", "se": SE}]}}))["id"]
        strict_id = (await alice.add_transformation({
            **spec, "name": "strict", "max_attempts": 2, "job": {
                "executable": "/bin/sh", "arguments": ["-c", strict],
                "outputs": [{"path": "o.txt", "lfn": "/cta/strict/%(task)s.txt", "se": SE}]}}))["id"]
        start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)

        async def settled() -> bool:
            views = [await show(alice, t) for t in (flaky_id, strict_id)]
            return all(v["tasks"]["created"] + v["tasks"]["submitted"] == 0 and sum(v["tasks"].values()) > 0
                       for v in views)

        await until(settled, "both transformations settled", timeout_s=80,
                    between=lambda: daemon_passes(grid.db, wms_config),
                    logs=lambda: "\n".join(p.output() for p in pilots))
        [flaky_task] = await alice.transformation_tasks(flaky_id)
        strict_files = {f["lfn"]: (f["status"], f["failures"]) for f in await alice.transformation_files(strict_id)}
        strict_tasks = await alice.transformation_tasks(strict_id)
    assert (flaky_task["state"], flaky_task["failures"]) == ("done", 2)
    job = await grid.db["jobs"].find_one({"_id": flaky_task["job"]})
    assert job is not None and (job["state"], job["attempt"]) == ("done", 3)
    assert strict_files == {"/cta/raw/bad.raw": ("problematic", 1), "/cta/raw/good1.raw": ("processed", 0),
                            "/cta/raw/good2.raw": ("processed", 0)}
    [bad_task] = [t for t in strict_tasks if t["files"] == ["/cta/raw/bad.raw"]]
    assert (bad_task["state"], bad_task["failures"]) == ("failed", 2)
