"""Races between a transformation's daemons and its owner's actions, run concurrently for many
rounds: a monitor's completion never swallows an extension that landed after it read the
transformation (the new tasks are made), and a delete or clean never leaves tasks, jobs or
requests that a task pass in its turn made after it."""

from __future__ import annotations

import asyncio
import random

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.principal import Principal
from productions import monitoring, transformations
from productions.spec import TransformationSpec
from tests.fixtures.grid import Grid

ROUNDS = 150
ALICE = Principal(sub="alice", vo="local", groups=("cta",),
                  scopes=frozenset({"jobs.read", "jobs.write", "catalogue.read", "catalogue.write"}))


async def _mc(db: AsyncDatabase[Document], name: str, max_tasks: int) -> Document:
    """alice's active mc transformation allowing `max_tasks` tasks."""
    spec = TransformationSpec.model_validate({"name": name, "type": "mc", "max_tasks": max_tasks,
                                              "job": {"executable": "/bin/true"}})
    doc = await transformations.create(db, ALICE, spec)
    active = await transformations.set_state(db, doc["_id"], ("new",), "active")
    assert active is not None
    return active


async def _jitter() -> None:
    await asyncio.sleep(random.uniform(0, 0.004))


async def test_a_monitors_completion_never_swallows_an_extension_that_landed_meanwhile(grid: Grid) -> None:
    db = grid.db
    doc = await _mc(db, "sim", 1)
    swallowed = 0
    for _ in range(ROUNDS):
        # Every task allowed was made and ended: the monitor's pass would complete it.
        limit = (await transformations.get(db, doc["_id"]))["spec"]["max_tasks"]
        await db["transformations"].update_one({"_id": doc["_id"]}, {"$set": {"next_task": limit, "state": "active"}})
        read = await transformations.get(db, doc["_id"])

        async def extend(read: Document = read) -> None:
            await _jitter()
            await transformations.extend(db, read, 1)

        await asyncio.gather(monitoring.follow_tasks(db, read), extend())
        after = await transformations.get(db, doc["_id"])
        if after["state"] == "completed" and after["next_task"] < after["spec"]["max_tasks"]:
            swallowed += 1
    assert swallowed == 0
