"""The pilot factory's per-cycle read of a queue's active pilots: exactly the queue's submitting,
waiting and running pilots, read one state at a time from their index (so not its history)."""

from __future__ import annotations

import random

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.components import index_specs
from kernel.db import Document, ensure_indexes, serves_index_order
from wms import pilot_records


async def test_active_pilots_are_the_queues_unfinished_ones(database: AsyncDatabase[Document]) -> None:
    await ensure_indexes(database, index_specs())
    rng = random.Random(7)
    docs = [{"_id": f"p{i}", "site": rng.choice(["A", "B"]), "queue": rng.choice(["short", "long"]),
             "state": rng.choice(pilot_records.STATES), "jobs": []} for i in range(300)]
    await database[pilot_records.PILOTS].insert_many(docs)
    unfinished = {pilot_records.SUBMITTING, "waiting", "running"}
    for site in ("A", "B"):
        for queue in ("short", "long"):
            got = await pilot_records.active(database, site, queue)
            assert sorted(p["_id"] for p in got) == sorted(
                d["_id"] for d in docs if (d["site"], d["queue"]) == (site, queue) and d["state"] in unfinished)


async def test_on_the_build_active_pilots_are_read_from_their_index(database: AsyncDatabase[Document]) -> None:
    """The read's promise breached (a state held in an array, which MongoDB's equality matches):
    what comes back shows the build read the index, not every pilot."""
    if not await serves_index_order(database):
        pytest.skip("the server is not Cairn's FerretDB build")
    await ensure_indexes(database, index_specs())
    await database[pilot_records.PILOTS].insert_many([
        {"_id": "p1", "site": "A", "queue": "q", "state": "running"},
        {"_id": "p2", "site": "A", "queue": "q", "state": ["running"]}])
    assert [p["_id"] for p in await pilot_records.active(database, "A", "q")] == ["p1"]
