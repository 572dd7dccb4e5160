"""Replication and removal transformations ask for requests as their owner, with the checks of
`POST /requests/...`: w on a file to delete its replicas (feeding needs only r), only SEs of the
owner's VO, and the requests stamped with that VO. A task the owner may not make fails with the
reason and its files become problematic; nothing of it is queued."""

from __future__ import annotations

import pytest

from kernel.errors import CairnError
from productions import task_creation, transformations
from productions.daemons import TransformationFeeder, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.authz import ALICES, World
from tests.fixtures.grid import Grid

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write", "transfers.read", "transfers.write")
LFN = "/cta/alices/data.raw"


async def _run_tasks(grid_db: object) -> None:
    for daemon in (TransformationFeeder(grid_db), TransformationTasks(grid_db)):  # type: ignore[arg-type]
        await daemon.run_once()


async def test_a_removal_transformation_of_files_its_owner_may_only_read_deletes_nothing(
    api: RunningApi, grid: Grid,
) -> None:
    await grid.add_file(LFN, b"precious", ["SITE-A-DISK", "SITE-B-DISK"], owner="alice", group="cta",
                        mode=0o644, meta={"type": "old"})  # carol, of group cta, reads it, may not write it
    async with api.client(api.token(sub="carol", vo="cta", groups=("cta",), scopes=USER)) as carol:
        tid = (await carol.add_transformation({
            "name": "wipe", "type": "removal", "input_query": "type=old", "input_path": "/cta",
            "request": {"ses": "SITE-B-DISK"}}))["id"]
        await _run_tasks(grid.db)
        [task] = await carol.transformation_tasks(tid)
        [file] = await carol.transformation_files(tid)
    assert await grid.db["transfer_requests"].count_documents({}) == 0
    assert task["state"] == "failed" and "w permission needed" in task["reason"], task
    assert file["status"] == "problematic"


async def test_a_request_transformation_needs_the_right_to_ask_for_requests(api: RunningApi, grid: Grid) -> None:
    """One that may not queue a transfer or deletion directly (no transfers.write) may not have a
    transformation queue them; and the requests a transformation queues are its owner's own."""
    jobs_only = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write")
    async with api.client(api.token(sub="carol", vo="cta", groups=("cta",), scopes=jobs_only)) as carol:
        for kind in ("removal", "replication"):
            with pytest.raises(CairnError) as refused:
                await carol.add_transformation({"name": f"t-{kind}", "type": kind, "input_query": "type=old",
                                                "input_path": "/cta", "request": {"ses": "SITE-B-DISK"}})
            assert refused.value.status == 403 and "transfers.write" in refused.value.message
    assert await grid.db["transformations"].count_documents({}) == 0
    await grid.add_file("/cta/old/f.raw", b"x", ["SITE-A-DISK"], owner="alice", meta={"type": "old"})
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        await alice.add_transformation({"name": "copy", "type": "replication", "input_query": "type=old",
                                        "input_path": "/cta", "request": {"ses": "SITE-B-DISK"}})
        await _run_tasks(grid.db)
        [mine] = await alice.request("GET", "/requests")
    assert (mine["lfn"], mine["dest_se"], mine["requester"]) == ("/cta/old/f.raw", "SITE-B-DISK", "user:alice")


async def test_a_replication_transformation_copies_only_to_its_owners_vo_ses_and_stamps_the_vo(
    vo_world: World,
) -> None:
    async with vo_world.client("eve") as eve:  # cta: DISK1 and DISK3; DISK2 is lhcb's
        await eve.set_metadata(ALICES, {"kind": "mine"})
        await eve.add_transformation({"name": "spread", "type": "replication", "input_query": "kind=mine",
                                      "input_path": "/cta", "request": {"ses": "DISK2|DISK3", "copies": 2}})
    await _run_tasks(vo_world.db)
    queued = await vo_world.db["transfer_requests"].find({}, {"lfn": 1, "dest_se": 1, "vo": 1, "_id": 0}).to_list()
    assert queued == [{"lfn": ALICES, "dest_se": "DISK3", "vo": "cta"}]


async def test_a_file_gone_since_it_was_fed_is_left_out_and_the_rest_of_its_task_is_asked_for(
    api: RunningApi, grid: Grid,
) -> None:
    for name in ("gone", "kept"):
        await grid.add_file(f"/cta/old/{name}.raw", b"x", ["SITE-A-DISK", "SITE-B-DISK"], meta={"type": "old"})
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        tid = (await alice.add_transformation({
            "name": "clean", "type": "removal", "input_query": "type=old", "input_path": "/cta",
            "grouping": {"count": 2}, "request": {"ses": "SITE-B-DISK"}}))["id"]
        await TransformationFeeder(grid.db).run_once()
        await task_creation.create_tasks(grid.db, await transformations.get(grid.db, tid))
        await grid.db["files"].delete_one({"_id": "/cta/old/gone.raw"})
        await TransformationTasks(grid.db).run_once()
        [task] = await alice.transformation_tasks(tid)
    queued = await grid.db["transfer_requests"].find({}, {"lfn": 1, "dest_se": 1, "_id": 0}).to_list()
    assert queued == [{"lfn": "/cta/old/kept.raw", "dest_se": "SITE-B-DISK"}]
    assert task["state"] == "submitted"
