"""A flush is not lost: one asked while a task pass ends an earlier flush (files fed before it
was asked, which the pass did not see, are made into a task by the next pass), nor one whose
unused files are more than a pass's window holds."""

from __future__ import annotations

import asyncio
import random

import pytest

from kernel.db import Document
from kernel.principal import Principal
from productions import stopping, task_creation, transformation_files, transformations
from productions.daemons import TransformationTasks
from productions.spec import TransformationSpec
from tests.fixtures.grid import Grid

# Before its fix 68 of 150 second flushes were lost: 20 rounds miss it with p < 0.01%.
ROUNDS = 20
ALICE = Principal(sub="alice", vo="local", groups=("cta",),
                  scopes=frozenset({"jobs.read", "jobs.write", "catalogue.read", "catalogue.write"}))


def _files(*lfns: str) -> list[Document]:
    return [{"_id": lfn, "size": 1, "meta_effective": {"type": "raw"}} for lfn in lfns]


async def _flushed(grid: Grid, name: str, lfns: list[str]) -> Document:
    """alice's processing transformation (3 files per task) holding `lfns` unused, flushed."""
    spec = TransformationSpec.model_validate({"name": name, "input_query": "type=raw", "input_path": "/cta",
                                              "grouping": {"count": 3}, "job": {"executable": "/bin/true"}})
    made = await transformations.create(grid.db, ALICE, spec)
    assert await transformations.set_state(grid.db, made["_id"], ("new",), "active") is not None
    await transformation_files.add_files(grid.db, made["_id"], _files(*lfns), None)
    return await stopping.flush(grid.db, made)


async def test_a_flush_asked_during_the_pass_that_ends_a_flush_is_kept(grid: Grid) -> None:
    db = grid.db
    lost = 0
    for i in range(ROUNDS):
        read = await _flushed(grid, f"f{i}", [f"/cta/raw/{i}-a"])  # the pass makes its incomplete group

        async def feed_and_flush(read: Document = read, lfn: str = f"/cta/raw/{i}-b") -> None:
            await asyncio.sleep(random.uniform(0, 0.02))
            await transformation_files.add_files(db, read["_id"], _files(lfn), None)
            await stopping.flush(db, await transformations.get(db, read["_id"]))

        await asyncio.gather(TransformationTasks(db).run_once(), feed_and_flush())
        await TransformationTasks(db).run_once()  # the next pass: a flush still asked makes its task
        lost += await transformation_files.any_in(db, read["_id"], ("unused",))
        # (out of the daemon's list for the next rounds)
        assert await transformations.set_state(db, read["_id"], ("active",), "completed") is not None
    assert lost == 0


async def test_a_flush_of_more_unused_files_than_a_window_ends_once_they_are_all_in_tasks(
    grid: Grid, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(task_creation, "WINDOW", 4)  # (10,000 files otherwise)
    read = await _flushed(grid, "w", [f"/cta/raw/{n}" for n in range(5)])
    for _ in range(3):
        await TransformationTasks(grid.db).run_once()
    read = await transformations.get(grid.db, read["_id"])
    assert read["state"] == "active"
    assert not await transformation_files.any_in(grid.db, read["_id"], ("unused",))
