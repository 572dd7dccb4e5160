"""Task numbers reserved by a pass before its tasks are stored: a pass cut off from the database
(as if stopped) between the two does not eat an mc transformation's quota (the next pass makes
the tasks of the numbers reserved and never stored), and a monitor looking in between does not
complete the transformation before those tasks ran."""

from __future__ import annotations

import asyncio
import random

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import ServiceUnavailable
from kernel.principal import Principal
from kernel.settings import Settings
from productions import monitoring, task_creation, tasks, transformations
from productions.spec import TransformationSpec
from tests.fixtures.grid import Grid
from tests.fixtures.tcp_gate import CutAfter, TcpGate

ALICE = Principal(sub="alice", vo="local", groups=("cta",), scopes=frozenset({"jobs.read", "jobs.write"}))
ROUNDS = 150


async def _mc(db: AsyncDatabase[Document], name: str, max_tasks: int) -> Document:
    spec = TransformationSpec.model_validate({"name": name, "type": "mc", "max_tasks": max_tasks,
                                              "job": {"executable": "/bin/true"}})
    made = await transformations.create(db, ALICE, spec)
    active = await transformations.set_state(db, made["_id"], ("new",), "active")
    assert active is not None
    return active


async def test_an_mc_pass_cut_after_reserving_its_numbers_leaves_its_tasks_to_the_next_pass(
    grid: Grid, db_gate: TcpGate, settings: Settings,
) -> None:
    db = grid.db
    made = active = await _mc(db, "sim", 3)
    cut = CutAfter(db_gate, "findAndModify", transformations.TRANSFORMATIONS)
    client = cut.client()
    try:
        with pytest.raises(ServiceUnavailable):
            await task_creation.create_tasks(client[settings.database], active)
    finally:
        await client.close()
        await db_gate.open()
    assert cut.done
    read = await transformations.get(db, made["_id"])
    assert read["next_task"] == 3  # reserved, none stored
    assert await task_creation.create_tasks(db, read) == 3
    made_tasks = await tasks.tasks_in(db, made["_id"], ["created"], 10)
    assert [t["number"] for t in made_tasks] == [1, 2, 3]


async def test_a_monitor_never_completes_an_mc_transformation_whose_last_tasks_a_pass_is_storing(
    grid: Grid,
) -> None:
    db = grid.db
    early = 0
    for i in range(ROUNDS):
        read = await _mc(db, f"s{i}", 1)

        async def monitor(read: Document = read) -> None:
            await asyncio.sleep(random.uniform(0, 0.006))
            await monitoring.follow_tasks(db, read)

        await asyncio.gather(task_creation.create_tasks(db, read), monitor())
        early += (await transformations.get(db, read["_id"]))["state"] == "completed"  # its task never ran
    assert early == 0
