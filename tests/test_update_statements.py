"""The statements of one `update` command (a driver's bulk write) behave as if each wrote its
documents at once, on any database: Cairn's FerretDB build writes them in shared transactions
(the sixteenth change of `.ci/install-ferretdb`), so each statement must still see the ones
before it (same `_id`, a field an earlier one set, `$in` of ids, every kind of `_id`), a refused
statement must leave the ones before it written and the rest unwritten, and concurrent bulk
writes must lose no update and win no guarded one twice."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from bson import ObjectId
from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from kernel.db import Document

IDS: list[Any] = [*(f"lfn/{i:02d}" for i in range(16)), *(ObjectId(f"{i:024x}") for i in range(8)), *range(8)]


class Model:
    """What the statements do, applied one after the other to documents in memory."""

    def __init__(self) -> None:
        self.docs: dict[Any, Document] = {}

    def inc_upsert(self, key: Any, i: int) -> UpdateOne:
        doc = self.docs.setdefault(key, {"_id": key})
        doc["n"], doc["last"] = doc.get("n", 0) + 1, i
        return UpdateOne({"_id": key}, {"$inc": {"n": 1}, "$set": {"last": i}}, upsert=True)

    def guarded(self, key: Any, at_least: int, i: int) -> UpdateOne:
        doc = self.docs.get(key)
        if doc is not None and doc.get("n", 0) >= at_least:
            doc["flag"] = i
        return UpdateOne({"_id": key, "n": {"$gte": at_least}}, {"$set": {"flag": i}})

    def by_field(self, last: int) -> UpdateMany:
        for doc in self.docs.values():
            if doc.get("last") == last:
                doc["m"] = doc.get("m", 0) + 1
        return UpdateMany({"last": last}, {"$inc": {"m": 1}})

    def by_ids(self, keys: list[Any]) -> UpdateMany:
        for key in keys:
            if key in self.docs:
                self.docs[key]["n"] = self.docs[key].get("n", 0) + 1
        return UpdateMany({"_id": {"$in": keys}}, {"$inc": {"n": 1}})

    def statement(self, i: int, rng: random.Random) -> UpdateOne | UpdateMany:
        kind = rng.random()
        if kind < 0.5 or i == 0:
            return self.inc_upsert(rng.choice(IDS), i)
        if kind < 0.75:
            return self.guarded(rng.choice(IDS), rng.randint(1, 4), i)
        if kind < 0.9:
            return self.by_field(rng.randrange(i))
        return self.by_ids(rng.sample(IDS, 3))


def as_stored(docs: list[Document]) -> dict[Any, Document]:
    return {repr(d["_id"]): d for d in docs}


@pytest.mark.parametrize("ordered", [True, False])
async def test_each_statement_sees_the_statements_before_it(database: AsyncDatabase[Document], ordered: bool) -> None:
    probe = database[f"statements_{ordered}"]
    rng, model = random.Random(17), Model()
    statements = [model.statement(i, rng) for i in range(600)]
    for start in range(0, len(statements), 200):
        await probe.bulk_write(statements[start:start + 200], ordered=ordered)
    stored = as_stored(await probe.find({}).to_list())
    assert stored == as_stored(list(model.docs.values()))
    assert len(stored) == len(IDS)


async def test_a_refused_statement_leaves_those_before_it_written(database: AsyncDatabase[Document]) -> None:
    probe = database["statements_refused"]
    await probe.create_index("u", unique=True)
    await probe.insert_many([{"_id": key, "u": key} for key in "abcd"])
    with pytest.raises(PyMongoError):
        await probe.bulk_write([UpdateOne({"_id": "a"}, {"$set": {"x": 1}}),
                                UpdateOne({"_id": "a"}, {"$inc": {"x": 1}}),
                                UpdateOne({"_id": "b"}, {"$set": {"u": "d"}}),  # d has it: refused
                                UpdateOne({"_id": "c"}, {"$set": {"x": 1}})], ordered=True)
    assert await probe.find({}, {"u": 0}).sort("_id", 1).to_list() == [
        {"_id": "a", "x": 2}, {"_id": "b"}, {"_id": "c"}, {"_id": "d"}]


async def test_concurrent_bulk_writes_lose_no_update_and_win_no_claim_twice(database: AsyncDatabase[Document]) -> None:
    counters, queue = database["statements_counters"], database["statements_queue"]
    keys = [f"k{i:02d}" for i in range(50)]
    await queue.insert_many([{"_id": key, "owner": None} for key in keys])

    async def count(rounds: int) -> None:
        for _ in range(rounds):
            await counters.bulk_write([UpdateOne({"_id": key}, {"$inc": {"n": 1}}, upsert=True) for key in keys],
                                      ordered=False)

    async def claim(owner: str, seed: int) -> int:
        order = random.Random(seed).sample(keys, len(keys))
        won = 0
        for start in range(0, len(order), 10):
            result = await queue.bulk_write([UpdateOne({"_id": key, "owner": None}, {"$set": {"owner": owner}})
                                             for key in order[start:start + 10]], ordered=False)
            won += result.modified_count
        return won

    wins = await asyncio.wait_for(asyncio.gather(*(count(8) for _ in range(5)),
                                                 *(claim(f"w{i}", i) for i in range(4))), timeout=120)
    assert {d["_id"]: d["n"] for d in await counters.find({}).to_list()} == {key: 40 for key in keys}
    owners = [d["owner"] for d in await queue.find({}).to_list()]
    assert None not in owners
    assert wins[5:] == [owners.count(f"w{i}") for i in range(4)]
