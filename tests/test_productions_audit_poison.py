"""One user's transformation cannot stop everyone's: a job template that a file's metadata
cannot fill (`%(run)c` with a run out of range, or one that gives a lone surrogate the database
cannot store) fails that task with the reason; a transformation's unexpected error is logged and
the daemon's pass goes on to the others; a query that compiles no more (a field declared since)
is kept as that transformation's feed error and the change feed goes on. A database outage
still stops the pass (the daemon backs off), whichever transformation meets it."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.metadata_fields import FieldDeclaration, declare_field
from kernel.db import Document
from productions.daemons import TransformationFeeder, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid
from tests.fixtures.tcp_gate import TcpGate, cut_short

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write", "transfers.read", "transfers.write")
SE = "SITE-A-DISK"


async def _alices_transformation(api: RunningApi, grid: Grid) -> str:
    """alice's well-behaved transformation over one file of kind `good`."""
    await grid.add_file("/cta/good/0.raw", b"x", [SE], meta={"kind": "good", "run": 7})
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        return str((await alice.add_transformation({
            "name": "good", "input_query": "kind=good", "input_path": "/cta",
            "job": {"executable": "/bin/true", "arguments": ["run-%(run)s"]}}))["id"])


async def _passes(db: AsyncDatabase[Document], count: int = 2) -> None:
    """Feed, then `count` passes of the task daemon: none may raise."""
    await TransformationFeeder(db).run_once()
    for _ in range(count):
        await TransformationTasks(db).run_once()


async def _task_states(db: AsyncDatabase[Document], tid: str) -> list[tuple[str, str | None]]:
    return [(t["state"], t.get("reason")) async for t in db["transformation_tasks"].find({"transformation": tid})]


@pytest.mark.parametrize("run", [2**40, 0xD800], ids=["out-of-range", "surrogate"])
async def test_a_job_template_a_files_metadata_cannot_fill_fails_that_task_only(
    api: RunningApi, grid: Grid, run: int,
) -> None:
    await grid.add_file("/cta/evil/0.raw", b"x", [SE], meta={"kind": "evil", "run": run})
    async with api.client(api.token(sub="mallory", vo="cta", groups=("cta",), scopes=USER)) as mallory:
        evil = (await mallory.add_transformation({
            "name": "evil", "input_query": "kind=evil", "input_path": "/cta",
            "job": {"executable": "/bin/true", "arguments": ["%(run)c"]}}))["id"]
    good = await _alices_transformation(api, grid)
    await _passes(grid.db)
    [(state, reason)] = await _task_states(grid.db, evil)
    assert state == "failed" and "the job template gives no valid job" in (reason or "")
    assert [s for s, _ in await _task_states(grid.db, good)] == ["submitted"]
    assert await grid.db["jobs"].count_documents({}) == 1


async def test_a_transformation_that_fails_unexpectedly_does_not_stop_the_others(api: RunningApi, grid: Grid) -> None:
    await grid.add_file("/cta/evil/0.raw", b"x", [SE], meta={"kind": "evil"})
    async with api.client(api.token(sub="mallory", vo="cta", groups=("cta",), scopes=USER)) as mallory:
        evil = (await mallory.add_transformation({
            "name": "evil", "type": "replication", "input_query": "kind=evil", "input_path": "/cta",
            "request": {"ses": "SITE-B-DISK"}}))["id"]
    await grid.db["transformations"].update_one({"_id": evil}, {"$set": {"spec.priority": "high"}})  # stored bad
    good = await _alices_transformation(api, grid)
    await _passes(grid.db)
    assert [s for s, _ in await _task_states(grid.db, evil)] == ["created"]  # left as it was
    assert [s for s, _ in await _task_states(grid.db, good)] == ["submitted"]


async def test_a_transformation_whose_query_no_longer_compiles_does_not_stop_the_feed(
    api: RunningApi, grid: Grid,
) -> None:
    good = await _alices_transformation(api, grid)
    async with api.client(api.token(sub="mallory", vo="cta", groups=("cta",), scopes=USER)) as mallory:
        evil = (await mallory.add_transformation({
            "name": "evil", "input_query": "run=abc", "input_path": "/cta",
            "job": {"executable": "/bin/true"}}))["id"]
    await TransformationFeeder(grid.db).run_once()
    # an administrator's routine declaration: `run=abc` compiles no more
    await declare_field(grid.db, FieldDeclaration(key="run", type="int"))
    await grid.add_file("/cta/good/1.raw", b"x", [SE], meta={"kind": "good", "run": 8})
    await change_feed.append(grid.db, [change_feed.event("file_registered", "/cta/good/1.raw")])
    await TransformationFeeder(grid.db).run_once()
    fed = {(f["transformation"], f["lfn"]) async for f in grid.db["transformation_files"].find({})}
    assert fed == {(good, "/cta/good/0.raw"), (good, "/cta/good/1.raw")}
    kept = await grid.db["transformations"].find_one({"_id": evil})
    assert kept is not None and "run is an int" in kept["feed_error"]["message"]


async def test_a_database_outage_during_a_transformations_work_stops_the_pass(
    api: RunningApi, grid: Grid, db_gate: TcpGate,
) -> None:
    await _alices_transformation(api, grid)
    await TransformationFeeder(grid.db).run_once()
    # the gate closes once the transformation's lease is taken: its work meets the outage
    await cut_short(db_gate, grid.db.name, "update", "leases", lambda db: TransformationTasks(db).run_once())
