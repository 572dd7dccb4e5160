"""What the changes of `.ci/install-ferretdb` must keep true on any database: `$in` (checked by
set on the FerretDB build) answers like a recount, and an `update` command of many statements
that modify existing documents answers (it hung on FerretDB 1.24 at 100)."""

from __future__ import annotations

import asyncio

from bson import Int64
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document


async def test_in_answers_match_a_recount(database: AsyncDatabase[Document]) -> None:
    probe = database["in_probe"]
    docs = [{"_id": f"id{i:03d}", "tags": [f"t{i % 5}", f"u{i % 3}"], "n": i, "name": f"n{i % 7}"} for i in range(120)]
    await probe.insert_many(docs)
    wanted = [f"id{i:03d}" for i in range(0, 240, 3)]  # half of them missing
    by_id = await probe.find({"_id": {"$in": wanted}}).to_list()
    assert sorted(d["_id"] for d in by_id) == sorted(d["_id"] for d in docs if d["_id"] in wanted)
    names = [f"n{i}" for i in (1, 4)] + [f"z{i}" for i in range(30)]
    by_name = await probe.find({"name": {"$in": names}, "n": {"$gte": 10}}).to_list()
    assert sorted(d["n"] for d in by_name) == [d["n"] for d in docs if d["name"] in names and d["n"] >= 10]
    tags = ["t1", "u2", 7] + [f"z{i}" for i in range(30)]  # array fields and a mixed list
    by_tag = await probe.find({"tags": {"$in": tags}}).to_list()
    assert sorted(d["n"] for d in by_tag) == [d["n"] for d in docs if set(d["tags"]) & {"t1", "u2"}]
    numbers = list(range(0, 120, 7)) + [f"s{i}" for i in range(20)]
    by_number = await probe.find({"n": {"$in": numbers}}).to_list()
    assert sorted(d["n"] for d in by_number) == list(range(0, 120, 7))


async def test_one_update_command_of_300_modifying_statements_answers(database: AsyncDatabase[Document]) -> None:
    counters = database["update_probe"]
    ops = [UpdateOne({"_id": f"c{i}"}, {"$inc": {"n": Int64(1)}}, upsert=True) for i in range(300)]
    assert (await counters.bulk_write(ops, ordered=False)).upserted_count == 300
    modified = await asyncio.wait_for(counters.bulk_write(ops, ordered=False), timeout=60)
    assert modified.modified_count == 300
    assert sorted({d["n"] for d in await counters.find({}).to_list()}) == [2]
