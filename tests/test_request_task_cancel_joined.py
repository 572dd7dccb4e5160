"""A stopped replication transformation withdraws its owner from the requests its tasks joined
(another user's identical open request): before, only the requests a task made itself were
withdrawn, so the owner stayed on the other's request, which then went on for the stopped
transformation once that user cancelled it."""

from __future__ import annotations

from cairn.components import index_specs
from kernel.db import ensure_indexes
from kernel.principal import Principal
from productions import request_tasks, tasks, transformations
from productions.spec import TransformationSpec
from tests.fixtures.grid import Grid
from transfers import queueing
from transfers.requests import JOINED, get_request

ALICE = Principal(sub="alice", vo="local", groups=("cta",),
                  scopes=frozenset({"catalogue.read", "transfers.read", "transfers.write"}))
LFN = "/cta/raw/1.raw"


async def test_a_stopped_tasks_owner_leaves_the_request_it_joined(grid: Grid) -> None:
    db = grid.db
    await ensure_indexes(db, index_specs())  # the unique active_key by which identical requests are shared
    await grid.add_file(LFN, b"x", ["SITE-A-DISK"], meta={"type": "raw"})
    bobs = await queueing.submit(db, "transfer", [{"lfn": LFN, "dest_se": "SITE-B-DISK"}], requester="user:bob")
    spec = TransformationSpec.model_validate({"name": "copy", "type": "replication", "input_query": "type=raw",
                                              "input_path": "/cta", "request": {"ses": "SITE-B-DISK", "copies": 1}})
    made = await transformations.create(db, ALICE, spec)
    doc = await transformations.set_state(db, made["_id"], ("new",), "active")
    assert doc is not None
    task = tasks.document(doc["_id"], 1, [LFN], {})
    await tasks.insert(db, [task])
    await request_tasks.submit_task(db, doc, task)
    joined = await get_request(db, bobs["successful"][LFN])
    assert joined is not None and joined.get(JOINED) == ["user:alice"]
    assert await request_tasks.cancel_task(db, doc, task) == 1
    left = await get_request(db, bobs["successful"][LFN])
    assert left is not None and (left["state"], left.get(JOINED)) == ("queued", [])
