"""Transformations and productions refused before anything is stored, and stopping: waiting
jobs are cancelled, files go back to unused, no data is deleted; the CLI drives it all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kernel.errors import InvalidInput, NotFound
from productions.daemons import TransformationFeeder, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import cli_json
from tests.fixtures.grid import Grid

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write", "transfers.read", "transfers.write")
SE = "SITE-A-DISK"


def step(name: str, query: str | None, out_type: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "job": {"executable": "/bin/true", "outputs": [
        {"path": "o", "lfn": f"/cta/{name}/%(task)s", "se": SE, "meta": {"type": out_type}}]}, **extra}
    if query is None:
        spec.update(type="mc", max_tasks=1)
    else:
        spec.update(input_query=query, input_path="/cta")
    return spec


@pytest.mark.parametrize(("steps", "problem"), [
    ([step("a", None, "sim"), step("b", "type=raw", "dl1")], "can never match"),
    ([step("a", None, "sim"), step("b", "type=sim", "sim")], "cycle"),
    ([step("a", None, "sim"), {**step("b", "type=sim", "dl1"), "colour": "red"}], "colour"),
    ([step("a", None, "sim"), step("a", "type=sim", "dl1")], "repeat"),
    ([step("a", None, "sim"), step("b", "type=sim (", "dl1")], "query"),
])
async def test_a_production_that_cannot_work_is_refused_and_creates_nothing(
    api: RunningApi, grid: Grid, steps: list[dict[str, Any]], problem: str,
) -> None:
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        with pytest.raises(InvalidInput) as refused:
            await alice.add_production({"name": "p", "steps": steps})
        assert problem in str(refused.value)
        assert await alice.list_transformations() == [] and await alice.list_productions() == []


async def test_a_transformation_scoped_to_a_missing_directory_is_refused(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        with pytest.raises(NotFound):
            await alice.add_transformation({**step("t", "type=raw", "x"), "input_path": "/cta/nowhere"})
        assert await alice.list_transformations() == []


async def test_stop_cancels_waiting_jobs_keeps_data_and_start_resumes(
    api: RunningApi, grid: Grid, tmp_path: Path,
) -> None:
    for i in range(4):
        await grid.add_file(f"/cta/raw/{i}.raw", b"x", [SE], meta={"type": "raw"})
    token = api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)
    spec_file = tmp_path / "t.yaml"
    spec_file.write_text(yaml.safe_dump({**step("t", "type=raw", "out"), "grouping": {"count": 3}}))

    async def cli(*args: str) -> Any:
        return await cli_json(api.url, token, "transformation", *args)

    tid = (await cli("add", str(spec_file)))["id"]
    for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
        await daemon.run_once()
    shown = await cli("show", tid)
    assert (shown["state"], shown["files"]["assigned"], shown["files"]["unused"], shown["tasks"]["submitted"]) == (
        "active", 3, 1, 1)
    [task] = await cli("tasks", tid)
    job = await grid.db["jobs"].find_one({"_id": task["job"]})
    assert job is not None and job["state"] == "received"  # no checker runs: the job waits
    assert await cli("stop", tid) == {"tasks_cancelled": 1, "jobs_killed": 1}
    job = await grid.db["jobs"].find_one({"_id": task["job"]})
    assert job is not None and job["state"] == "killed"
    assert {f["status"] for f in await cli("files", tid)} == {"unused"}
    assert await grid.db["files"].count_documents({"meta.type": "raw"}) == 4
    assert (await cli("start", tid))["state"] == "active"
    assert (await cli("flush", tid))["state"] == "flushing"
    await TransformationTasks(grid.db).run_once()
    counts = (await cli("show", tid))["tasks"]
    assert (counts["killed"], counts["submitted"]) == (1, 2)  # flushed: the 4th file's group too
    assert [t["id"] for t in await cli("list")] == [tid]
    assert (await cli("extend", tid, "--tasks", "2"))["spec"]["max_tasks"] == 5  # 3 tasks made, 2 more


async def test_a_file_whose_metadata_comes_to_match_is_fed_and_one_its_owner_cannot_read_is_not(
    api: RunningApi, grid: Grid,
) -> None:
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        tid = (await alice.add_transformation(step("t", "type=raw", "out")))["id"]
        await TransformationFeeder(grid.db).run_once()  # the initial query: nothing matches yet
        result = await alice.register_files([
            {"lfn": "/cta/in/later.raw", "size": 1, "adler32": "00020002", "meta": {"type": "calib"}},
            {"lfn": "/cta/in/secret.raw", "size": 1, "adler32": "00020002", "mode": 0o600}])
        assert not result["failed"], result
        await TransformationFeeder(grid.db).run_once()
        assert await alice.transformation_files(tid) == []
        await alice.set_metadata("/cta/in/later.raw", {"type": "raw"})
    async with api.client(api.token(sub="carol", vo="cta", groups=("cta",), scopes=USER)) as carol:
        # carol's transformation must not feed on alice's private file, even once it matches
        carols = (await carol.add_transformation(step("c", "type=raw", "out")))["id"]
        await TransformationFeeder(grid.db).run_once()
        async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
            await alice.set_metadata("/cta/in/secret.raw", {"type": "raw"})
        await TransformationFeeder(grid.db).run_once()
        assert [f["lfn"] for f in await carol.transformation_files(carols)] == ["/cta/in/later.raw"]
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        assert [f["lfn"] for f in await alice.transformation_files(tid)] == ["/cta/in/later.raw",
                                                                              "/cta/in/secret.raw"]


async def test_a_removal_transformation_queues_deletions_but_never_of_a_last_replica(
    api: RunningApi, grid: Grid,
) -> None:
    await grid.add_file("/cta/old/two.raw", b"x", ["SITE-A-DISK", "SITE-B-DISK"], meta={"type": "old"})
    await grid.add_file("/cta/old/one.raw", b"y", ["SITE-B-DISK"], meta={"type": "old"})
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        tid = (await alice.add_transformation({
            "name": "clean", "type": "removal", "input_query": "type=old", "input_path": "/cta",
            "request": {"ses": "SITE-B-DISK"}}))["id"]
        for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
            await daemon.run_once()
        tasks = {t["files"][0]: t for t in await alice.transformation_tasks(tid)}
    queued = await grid.db["transfer_requests"].find({}).to_list()
    assert [(r["kind"], r["lfn"], r["dest_se"], r["submission"]) for r in queued] == [
        ("delete", "/cta/old/two.raw", "SITE-B-DISK", tasks["/cta/old/two.raw"]["id"])]
    assert (tasks["/cta/old/two.raw"]["state"], tasks["/cta/old/one.raw"]["state"]) == ("submitted", "done")
