"""What leaves a transformation and what ends one: files whose metadata stops matching (or that
are removed) are dropped while unused and kept once assigned; cleaning ends the jobs and deletes
the bookkeeping but no data; a production stops, starts and is deleted from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cairn.sdk import Client
from kernel.errors import Conflict, NotFound
from productions.daemons import TransformationFeeder, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import cli_json
from tests.fixtures.grid import Grid

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write")
SE = "SITE-A-DISK"


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "input_query": "type=raw", "input_path": "/cta", "job": {"executable": "/bin/true"},
            **extra}


def alice(api: RunningApi) -> Client:
    return api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER))


async def statuses(client: Client, tid: str) -> dict[str, str]:
    return {f["lfn"]: f["status"] for f in await client.transformation_files(tid)}


async def register(client: Client, lfns: list[str], meta: dict[str, Any] | None = None) -> None:
    result = await client.register_files([{"lfn": lfn, "size": 1, "adler32": "00020002",
                                           **({"meta": meta} if meta else {})} for lfn in lfns])
    assert not result["failed"], result


async def test_files_leaving_the_query_are_removed_while_unused_and_kept_once_assigned(
    api: RunningApi, grid: Grid,
) -> None:
    feed = TransformationFeeder(grid.db).run_once
    async with alice(api) as client:
        tid = (await client.add_transformation(spec("t", grouping={"count": 3})))["id"]
        await feed()
        await register(client, [f"/cta/in/{i}.raw" for i in range(5)], {"type": "raw"})
        await feed()
        await TransformationTasks(grid.db).run_once()  # 0, 1 and 2 make a task; 3 and 4 wait
        for lfn in ("/cta/in/1.raw", "/cta/in/3.raw"):
            await client.set_metadata(lfn, {"type": "calib"})
        await client.remove_files(["/cta/in/4.raw"])
        await feed()
        assert await statuses(client, tid) == {"/cta/in/0.raw": "assigned", "/cta/in/1.raw": "assigned",
                                               "/cta/in/2.raw": "assigned", "/cta/in/3.raw": "removed",
                                               "/cta/in/4.raw": "removed"}
        await client.set_metadata("/cta/in/3.raw", {"type": "raw"})  # it matches again
        await feed()
        assert (await statuses(client, tid))["/cta/in/3.raw"] == "unused"


async def test_a_directory_whose_metadata_stops_matching_drops_its_unused_files(api: RunningApi, grid: Grid) -> None:
    feed = TransformationFeeder(grid.db).run_once
    async with alice(api) as client:
        await client.mkdir("/cta/run7")
        await client.set_metadata("/cta/run7", {"type": "raw"})
        await register(client, ["/cta/run7/a.raw", "/cta/run7/b.raw"])
        await register(client, ["/cta/other.raw"], {"type": "raw"})
        tid = (await client.add_transformation(spec("t", grouping={"count": 5})))["id"]
        await feed()
        assert set((await statuses(client, tid)).values()) == {"unused"}
        await client.set_metadata("/cta/run7", {"type": "bad"})
        await feed()
        assert await statuses(client, tid) == {"/cta/other.raw": "unused", "/cta/run7/a.raw": "removed",
                                               "/cta/run7/b.raw": "removed"}


async def test_clean_ends_the_jobs_deletes_the_bookkeeping_and_keeps_every_file(
    api: RunningApi, grid: Grid, tmp_path: Path,
) -> None:
    for i in range(3):
        await grid.add_file(f"/cta/raw/{i}.raw", b"x", [SE], meta={"type": "raw"})
    token = api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)

    async def cli(*args: str, code: int = 0) -> Any:
        return await cli_json(api.url, token, "transformation", *args, code=code)

    spec_file = tmp_path / "t.yaml"
    spec_file.write_text(yaml.safe_dump(spec("t", grouping={"count": 2})))
    tid = (await cli("add", str(spec_file)))["id"]
    for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
        await daemon.run_once()
    async with alice(api) as client:  # the CLI for the actions, the SDK for looking
        [task] = await client.transformation_tasks(tid)
        assert "stop it before cleaning" in await cli("clean", tid, code=2)
        await grid.db["jobs"].update_one({"_id": task["job"]}, {"$set": {"state": "running"}})  # a running job
        assert (await cli("stop", tid))["jobs_killed"] == 0  # stop leaves running jobs; clean ends them
        cleaned = await cli("clean", tid)
        assert (cleaned["state"], cleaned["tasks_removed"], cleaned["file_statuses_removed"]) == ("cleaned", 1, 3)
        assert cleaned["summary"]["files"]["assigned"] == 2 and cleaned["summary"]["tasks"]["submitted"] == 1
        job = await grid.db["jobs"].find_one({"_id": task["job"]})
        assert job is not None and job.get("kill_requested") is True  # the pilot running it is told to stop
        shown = await client.get_transformation(tid)
        assert (shown["state"], shown["cleaned_summary"], shown["files"]["assigned"]) == (
            "cleaned", cleaned["summary"], 0)
        assert await client.transformation_files(tid) == [] and await client.transformation_tasks(tid) == []
        assert await grid.db["files"].count_documents({"meta.type": "raw"}) == 3  # no data deleted
        assert (await client.transformation_action(tid, "clean"))["tasks_removed"] == 0  # again: harmless
        with pytest.raises(Conflict, match="must be one of stopped"):
            await client.transformation_action(tid, "start")
        assert (await cli("delete", tid))["state"] == "deleted"
        with pytest.raises(NotFound):
            await client.get_transformation(tid)


async def test_a_production_stops_starts_and_is_deleted_from_the_cli_without_its_data(
    api: RunningApi, grid: Grid, tmp_path: Path,
) -> None:
    await grid.add_file("/cta/raw/0.raw", b"x", [SE], meta={"type": "raw"})
    token = api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)

    async def cli(*args: str) -> Any:
        return await cli_json(api.url, token, "production", *args)

    prod_file = tmp_path / "p.yaml"
    prod_file.write_text(yaml.safe_dump({"name": "p", "steps": [
        spec("first", job={"executable": "/bin/true", "outputs": [
            {"path": "o", "lfn": "/cta/out/%(task)s", "se": SE, "meta": {"type": "out"}}]}),
        {**spec("second"), "input_query": "type=out"}]}))
    production = await cli("add", str(prod_file))
    first, second = (s["id"] for s in production["steps"])
    for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
        await daemon.run_once()
    assert (await cli("stop", production["id"]))["state"] == "stopped"
    started = await cli("start", production["id"])
    assert (started["state"], started["started"]) == ("active", [first, second])
    async with alice(api) as client:
        with pytest.raises(Conflict, match="delete that"):
            await client.delete_transformation(first)
        deleted = await cli("delete", production["id"])
        assert sorted(deleted["steps"]) == sorted([first, second])
        with pytest.raises(NotFound):
            await client.get_production(production["id"])
        with pytest.raises(NotFound):
            await client.get_transformation(first)
    job = await grid.db["jobs"].find_one({"name": "first-1"})
    assert job is not None and job["state"] == "killed"  # it had not started: cancelled
    assert await grid.db["files"].count_documents({"_id": "/cta/raw/0.raw"}) == 1
    assert await grid.db["transformation_files"].count_documents({}) == 0
    assert await grid.db["transformation_tasks"].count_documents({}) == 0
