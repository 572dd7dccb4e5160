"""A stop cut off from the database (as if stopped) between killing a task and giving its files
back leaves no file assigned for good to the killed task: the transformation's start gives them
back, and its next pass makes them a new task."""

from __future__ import annotations

import pytest

from kernel.errors import ServiceUnavailable
from kernel.principal import Principal
from kernel.settings import Settings
from productions import stopping, task_creation, tasks, transformation_files, transformations
from productions.spec import TransformationSpec
from tests.fixtures.grid import Grid
from tests.fixtures.tcp_gate import CutAfter, TcpGate

ALICE = Principal(sub="alice", vo="local", groups=("cta",),
                  scopes=frozenset({"jobs.read", "jobs.write", "catalogue.read", "catalogue.write"}))
LFN = "/cta/raw/1.raw"


async def test_a_stop_cut_between_a_tasks_kill_and_its_files_release_is_finished_by_start(
    grid: Grid, db_gate: TcpGate, settings: Settings,
) -> None:
    db = grid.db
    spec = TransformationSpec.model_validate({"name": "p", "input_query": "type=raw", "input_path": "/cta",
                                              "job": {"executable": "/bin/true"}})
    made = await transformations.create(db, ALICE, spec)
    active = await transformations.set_state(db, made["_id"], ("new",), "active")
    assert active is not None
    await transformation_files.add_files(db, made["_id"], [{"_id": LFN, "size": 1, "meta_effective": {}}], None)
    assert await task_creation.create_tasks(db, active) == 1  # created, not submitted yet
    cut = CutAfter(db_gate, "update", tasks.TASKS)
    client = cut.client()
    try:
        with pytest.raises(ServiceUnavailable):
            await stopping.stop(client[settings.database], active)
    finally:
        await client.close()
        await db_gate.open()
    [first] = await tasks.tasks_in(db, made["_id"], ["killed"], 10)  # killed, its file not given back
    started = await stopping.start(db, await transformations.get(db, made["_id"]))
    assert await task_creation.create_tasks(db, started) == 1
    [file] = await transformation_files.files_of(db, made["_id"], None, None, 10)
    assert (file["status"], file["task"]) == ("assigned", tasks.task_id(made["_id"], 2)), first
