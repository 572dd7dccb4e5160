"""Grouping by where the files are: `broadcast` (one task per set of SEs: those holding the files,
or for a replication those that lack them) and `share` (files divided among sites by shares,
each to a site that holds it), from the spec through the daemons to jobs and transfer requests
on real `file://` SEs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cairn.sdk import Client
from productions.daemons import TransformationFeeder, TransformationTasks
from productions.grouping import make_groups
from productions.spec import TransformationSpec
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write", "transfers.read", "transfers.write")
A, B, C = "SITE-A-DISK", "SITE-B-DISK", "SITE-C-DISK"
JOB = {"executable": "/bin/true"}


async def passes(grid: Grid, *, flush_with: tuple[Client, str] | None = None) -> None:
    """The feeder, then task creation and submission; with `flush_with`, a flush and one more pass."""
    for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
        await daemon.run_once()
    if flush_with is not None:
        client, tid = flush_with
        await client.transformation_action(tid, "flush")
        await TransformationTasks(grid.db).run_once()


def alice(api: RunningApi) -> Client:
    return api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER))


async def test_broadcast_replication_copies_to_every_target_se_lacking_the_file(api: RunningApi, grid: Grid) -> None:
    await grid.add_file("/cta/raw/1.raw", b"1", [A], meta={"type": "raw"})
    await grid.add_file("/cta/raw/2.raw", b"2", [A, B], meta={"type": "raw"})
    await grid.add_file("/cta/raw/3.raw", b"3", [A], meta={"type": "raw"})
    async with alice(api) as client:
        tid = (await client.add_transformation({
            "name": "spread", "type": "replication", "input_query": "type=raw", "input_path": "/cta",
            "grouping": {"plugin": "broadcast", "count": 2}, "request": {"ses": f"{B}|{C}"}}))["id"]
        await passes(grid)
        first = await client.transformation_tasks(tid)
        assert [(t["files"], t["env"]["target_ses"]) for t in first] == [(["/cta/raw/1.raw", "/cta/raw/3.raw"], [B, C])]
        await passes(grid, flush_with=(client, tid))  # 2.raw lacks only C: its group is not full
        tasks = await client.transformation_tasks(tid)
    assert [(t["files"], t["env"]["target_ses"], t["state"]) for t in tasks] == [
        (["/cta/raw/1.raw", "/cta/raw/3.raw"], [B, C], "submitted"), (["/cta/raw/2.raw"], [C], "submitted")]
    queued = await grid.db["transfer_requests"].find({}).to_list()
    assert sorted((r["lfn"], r["dest_se"]) for r in queued) == [
        ("/cta/raw/1.raw", B), ("/cta/raw/1.raw", C), ("/cta/raw/2.raw", C), ("/cta/raw/3.raw", B),
        ("/cta/raw/3.raw", C)]


async def test_broadcast_processing_groups_files_by_the_ses_holding_them(api: RunningApi, grid: Grid) -> None:
    for name, ses in (("a1", [A]), ("a2", [A]), ("b1", [B]), ("b2", [B]), ("ab", [A, B]), ("lost", [])):
        await grid.add_file(f"/cta/raw/{name}.raw", b"x", ses, meta={"type": "raw"})
    async with alice(api) as client:
        tid = (await client.add_transformation({
            "name": "near", "input_query": "type=raw", "input_path": "/cta", "job": JOB,
            "grouping": {"plugin": "broadcast", "count": 2}}))["id"]
        await passes(grid)
        full = [(t["files"], t["env"]["ses"]) for t in await client.transformation_tasks(tid)]
        await passes(grid, flush_with=(client, tid))
        tasks = await client.transformation_tasks(tid)
        unused = [f["lfn"] for f in await client.transformation_files(tid, status="unused")]
    assert full == [(["/cta/raw/a1.raw", "/cta/raw/a2.raw"], [A]), (["/cta/raw/b1.raw", "/cta/raw/b2.raw"], [B])]
    assert [(t["files"], t["env"]["ses"]) for t in tasks[2:]] == [(["/cta/raw/ab.raw"], [A, B])]
    assert {t["state"] for t in tasks} == {"submitted"}
    assert unused == ["/cta/raw/lost.raw"]  # held nowhere: it cannot be read, so it waits


async def test_share_divides_files_among_sites_by_share_and_where_they_are(api: RunningApi, grid: Grid) -> None:
    for i in range(2):
        await grid.add_file(f"/cta/raw/0b{i}.raw", b"x", [B], meta={"type": "raw"})  # only SITE-B holds these
    for i in range(6):
        await grid.add_file(f"/cta/raw/1ab{i}.raw", b"x", [A, B], meta={"type": "raw"})
    await grid.add_file("/cta/raw/2c.raw", b"x", [C], meta={"type": "raw"})  # no share site holds it
    async with alice(api) as client:
        tid = (await client.add_transformation({
            "name": "shared", "input_query": "type=raw", "input_path": "/cta", "job": JOB,
            "grouping": {"plugin": "share", "shares": {"SITE-A": 3, "SITE-B": 1}, "count": 1}}))["id"]
        await passes(grid, flush_with=(client, tid))
        tasks = await client.transformation_tasks(tid)
        unused = [f["lfn"] for f in await client.transformation_files(tid, status="unused")]
    by_site = {site: sorted(f for t in tasks if t["env"]["site"] == site for f in t["files"])
               for site in ("SITE-A", "SITE-B")}
    assert by_site == {"SITE-A": [f"/cta/raw/1ab{i}.raw" for i in range(6)],
                       "SITE-B": ["/cta/raw/0b0.raw", "/cta/raw/0b1.raw"]}  # 6:2 is 3:1
    assert unused == ["/cta/raw/2c.raw"]
    for task in tasks:  # each job is narrowed to the site its share chose
        job = await grid.db["jobs"].find_one({"_id": task["job"]})
        assert job is not None and job["description"]["requirements"]["sites"] == [task["env"]["site"]]


async def test_share_replication_makes_one_copy_at_the_site_furthest_below_its_share(
    api: RunningApi, grid: Grid,
) -> None:
    for i in range(4):
        await grid.add_file(f"/cta/raw/{i}.raw", b"x", [A], meta={"type": "raw"})
    await grid.add_file("/cta/raw/0-at-c.raw", b"x", [A, C], meta={"type": "raw"})
    async with alice(api) as client:
        tid = (await client.add_transformation({
            "name": "dist", "type": "replication", "input_query": "type=raw", "input_path": "/cta",
            "request": {"ses": f"{B}|{C}"},
            "grouping": {"plugin": "share", "shares": {"SITE-B": 1, "SITE-C": 1}}}))["id"]
        await passes(grid)
        tasks = {t["files"][0]: (t["env"]["site"], t["state"]) for t in await client.transformation_tasks(tid)}
    assert tasks["/cta/raw/0-at-c.raw"] == ("SITE-C", "done")  # held at a share site already: nothing to copy
    queued = sorted((r["lfn"], r["dest_se"]) for r in await grid.db["transfer_requests"].find({}).to_list())
    # 0-at-c counts for SITE-C, then the others go where the count lags: B, B (a tie), C, B
    assert [dest for _, dest in queued].count(B) == 3 and [dest for _, dest in queued].count(C) == 1
    assert [lfn for lfn, _ in queued] == [f"/cta/raw/{i}.raw" for i in range(4)]


def test_share_counts_the_files_earlier_tasks_took() -> None:
    files = [{"lfn": f"f{i}", "sites": ["SITE-A", "SITE-B"]} for i in range(4)]
    groups = make_groups(files, {"plugin": "share", "shares": {"SITE-A": 1, "SITE-B": 1}, "count": 1}, final=False,
                         taken={"SITE-A": 5, "SITE-B": 1})
    assert [g.env["site"] for g in groups] == ["SITE-B"] * 4  # B catches up with A first


@pytest.mark.parametrize(("grouping", "extra", "problem"), [
    ({"plugin": "share"}, {}, "give `shares`"),
    ({"plugin": "count", "shares": {"SITE-A": 1}}, {}, "give `shares`"),
    ({"plugin": "share", "shares": {"SITE-A": 0}}, {}, "share above 0"),
    ({"plugin": "share", "shares": {"SITE-A": 1}}, {"type": "removal", "request": {"ses": "SITE-A-DISK"},
                                                    "job": None}, "processing and replication"),
])
def test_a_location_grouping_that_cannot_work_is_refused(grouping: dict[str, Any], extra: dict[str, Any],
                                                         problem: str) -> None:
    spec = {"name": "t", "input_query": "type=raw", "job": JOB, "grouping": grouping, **extra}
    with pytest.raises(ValidationError) as refused:
        TransformationSpec.model_validate({k: v for k, v in spec.items() if v is not None})
    assert problem in str(refused.value)
