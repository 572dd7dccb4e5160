"""A monitor cut off from the database (as if stopped) between counting a request task's failed
attempt and asking its requests again does not count that attempt twice: the next pass finds it
counted, so the task still gets every attempt its transformation allows."""

from __future__ import annotations

import pytest

from kernel.errors import ServiceUnavailable
from kernel.principal import Principal
from kernel.settings import Settings
from productions import request_tasks, tasks, transformations
from productions.spec import TransformationSpec
from tests.fixtures.grid import Grid
from tests.fixtures.tcp_gate import CutAfter, TcpGate
from transfers import cancellation

ALICE = Principal(sub="alice", vo="local", groups=("cta",),
                  scopes=frozenset({"catalogue.read", "transfers.read", "transfers.write"}))


async def test_a_request_tasks_failure_counted_by_a_pass_cut_short_is_not_counted_again(
    grid: Grid, db_gate: TcpGate, settings: Settings,
) -> None:
    db = grid.db
    spec = TransformationSpec.model_validate({"name": "copy", "type": "replication", "input_query": "type=raw",
                                              "input_path": "/cta", "max_attempts": 3,
                                              "request": {"ses": "SITE-B-DISK", "copies": 1}})
    made = await transformations.create(db, ALICE, spec)
    doc = await transformations.set_state(db, made["_id"], ("new",), "active")
    assert doc is not None
    await grid.add_file("/cta/raw/1.raw", b"x", ["SITE-A-DISK"], meta={"type": "raw"})
    task = tasks.document(doc["_id"], 1, ["/cta/raw/1.raw"], {})
    await tasks.insert(db, [task])
    await request_tasks.submit_task(db, doc, task)
    assert await cancellation.cancel(db, {"submission": task["_id"]}) == 1  # its one request failed for good
    cut = CutAfter(db_gate, "findAndModify", tasks.TASKS)
    client = cut.client()
    try:
        with pytest.raises(ServiceUnavailable):
            [read] = await tasks.tasks_in(db, doc["_id"], ["submitted"], 1)
            await request_tasks.follow_task(client[settings.database], doc, read)
    finally:
        await client.close()
        await db_gate.open()
    assert cut.done
    [read] = await tasks.tasks_in(db, doc["_id"], ["submitted"], 1)
    assert read["failures"] == 1  # counted; its requests not asked again yet
    await request_tasks.follow_task(db, doc, read)
    [after] = await tasks.tasks_in(db, doc["_id"], ["created"], 1)
    assert after["failures"] == 1
