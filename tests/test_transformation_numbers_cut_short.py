"""A task pass cut off from the database (as if stopped) between reserving its task numbers and
storing its tasks does not eat an mc transformation's quota: the next pass makes the tasks of
the numbers reserved and never stored, so the transformation still makes every task it allows."""

from __future__ import annotations

import pytest

from kernel.errors import ServiceUnavailable
from kernel.principal import Principal
from kernel.settings import Settings
from productions import task_creation, tasks, transformations
from productions.spec import TransformationSpec
from tests.fixtures.grid import Grid
from tests.fixtures.tcp_gate import CutAfter, TcpGate

ALICE = Principal(sub="alice", vo="local", groups=("cta",), scopes=frozenset({"jobs.read", "jobs.write"}))


async def test_an_mc_pass_cut_after_reserving_its_numbers_leaves_its_tasks_to_the_next_pass(
    grid: Grid, db_gate: TcpGate, settings: Settings,
) -> None:
    db = grid.db
    spec = TransformationSpec.model_validate({"name": "sim", "type": "mc", "max_tasks": 3,
                                              "job": {"executable": "/bin/true"}})
    made = await transformations.create(db, ALICE, spec)
    active = await transformations.set_state(db, made["_id"], ("new",), "active")
    assert active is not None
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
