"""The transformation daemons' periodic reads: a transformation's open tasks and its next unused
files come in the order and number asked whatever its history holds (read one state at a time
under INDEX_ORDER on the embedded database), and task numbers stop where `_id` order stops
being number order."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.components import index_specs
from kernel.db import Document, ensure_indexes, serves_index_order
from kernel.errors import Conflict
from kernel.principal import Principal
from productions import tasks, transformation_files, transformations
from productions.spec import TransformationSpec

ADMIN = Principal(sub="t", vo="local", groups=("admin",), scopes=frozenset({"admin"}))


async def _transformation(db: AsyncDatabase[Document]) -> Document:
    await ensure_indexes(db, index_specs())
    spec = TransformationSpec.model_validate({"name": "t", "input_query": "type=raw", "input_path": "/",
                                              "grouping": {"count": 1}, "job": {"executable": "/bin/true"}})
    return await transformations.create(db, ADMIN, spec)


async def test_tasks_in_answers_by_number_across_states_and_pages(database: AsyncDatabase[Document]) -> None:
    doc = await _transformation(database)
    other = await _transformation(database)
    rng = random.Random(11)
    # Numbers of several digit counts, in random order, in every state, some files marked.
    numbers = rng.sample(range(1, 3000), 400)
    made = [{**tasks.document(t["_id"], n, [f"/f{n}"], {}), "state": rng.choice(tasks.STATES),
             "files_marked": rng.random() < 0.5} for n in numbers for t in (doc, other)]
    await database[tasks.TASKS].insert_many(made)
    mine = sorted((t for t in made if t["transformation"] == doc["_id"]), key=lambda t: t["number"])

    def expected(states: tuple[str, ...], limit: int, after: int, **fields: object) -> list[int]:
        return [t["number"] for t in mine if t["state"] in states and t["number"] > after
                and all(t[k] == v for k, v in fields.items())][:limit]

    for states in (("submitted",), tasks.OPEN, tasks.STATES):
        for limit, after in ((1, -1), (7, -1), (50, 400), (1000, 2500), (5, 2999)):
            got = await tasks.tasks_in(database, doc["_id"], states, limit, after)
            assert [t["number"] for t in got] == expected(states, limit, after), (states, limit, after)
    got = await tasks.tasks_in(database, doc["_id"], ["created"], 30, files_marked=False)
    assert [t["number"] for t in got] == expected(("created",), 30, -1, files_marked=False)
    # Paging by the last number seen walks every open task once.
    seen: list[int] = []
    while page := await tasks.tasks_in(database, doc["_id"], tasks.OPEN, 13, seen[-1] if seen else -1):
        seen += [t["number"] for t in page]
    assert seen == expected(tasks.OPEN, 10**6, -1)


async def test_task_numbers_stop_at_eight_digits(database: AsyncDatabase[Document]) -> None:
    doc = await _transformation(database)
    await database[transformations.TRANSFORMATIONS].update_one(
        {"_id": doc["_id"]}, {"$set": {"next_task": transformations.MAX_TASK - 3}})
    assert await transformations.allocate_tasks(database, doc["_id"], 3) == transformations.MAX_TASK - 2
    with pytest.raises(Conflict):
        await transformations.allocate_tasks(database, doc["_id"], 1)
    assert tasks.task_id(doc["_id"], transformations.MAX_TASK).endswith(f":{transformations.MAX_TASK}")


async def test_unused_files_come_in_group_then_lfn_order(database: AsyncDatabase[Document]) -> None:
    doc = await _transformation(database)
    rng = random.Random(3)
    lfns = [f"/d{rng.randrange(5)}/f{i:04d}" for i in rng.sample(range(2000), 300)]
    plain = [{"_id": lfn, "size": 1, "meta_effective": {}} for lfn in lfns]
    await transformation_files.add_files(database, doc["_id"], plain, None)
    # A history of processed files (another status) and another transformation's unused ones.
    await database[transformation_files.FILES].update_many(
        {"transformation": doc["_id"], "lfn": {"$in": lfns[:100]}}, {"$set": {"status": "processed"}})
    other = await _transformation(database)
    await transformation_files.add_files(database, other["_id"], plain[:50], None)
    unused = sorted(lfns[100:])
    assert await transformation_files.any_in(database, doc["_id"], ["assigned", "processed"])
    assert not await transformation_files.any_in(database, doc["_id"], ["assigned", "problematic"])
    for limit in (1, 17, 1000):
        got = [f["lfn"] async for f in transformation_files.unused_files(database, doc["_id"], limit,
                                                                            grouped=False)]
        assert got == unused[:limit]
    # Grouped by a metadata value that may be a number: sorted as values, not as text.
    keyed = await _transformation(database)
    runs: list[Document] = [{"_id": f"/r/f{i:03d}", "size": 1, "meta_effective": {"run": run}}
            for i, run in enumerate(rng.choices([9, 10, 100, 2], k=40))]
    await transformation_files.add_files(database, keyed["_id"], runs, "run")
    got = [(f["group_value"], f["lfn"]) async for f in transformation_files.unused_files(database, keyed["_id"], 100)]
    assert got == sorted((r["meta_effective"]["run"], r["_id"]) for r in runs)
    # Values of every scalar kind, in MongoDB's order (null, numbers, strings, booleans), whatever
    # the limit; and a document among them, which only the database can place: all still come.
    mixed = await _transformation(database)
    kinds: list[Any] = [None, -1, 2.5, 3, "", "b", "a b", "é", True, False]
    files: list[Document] = [{"_id": f"/m/f{i:03d}", "size": 1, "meta_effective": {"k": rng.choice(kinds)}}
                             for i in range(120)]
    await transformation_files.add_files(database, mixed["_id"], files, "k")
    order = {str(v): i for i, v in enumerate([None, -1, 2.5, 3, "", "a b", "b", "é", False, True])}
    expected = sorted((order[str(f["meta_effective"]["k"])], f["_id"]) for f in files)
    for limit in (1, 7, 50, 1000, 0):  # 0: no limit, as for a find
        got_mixed = [(order[str(f["group_value"])], f["lfn"])
                     async for f in transformation_files.unused_files(database, mixed["_id"], limit)]
        assert got_mixed == expected[:limit or None], limit
    await transformation_files.add_files(database, mixed["_id"], [{"_id": "/m/doc", "size": 1,
                                                                  "meta_effective": {"k": {"x": 1}}}], "k")
    everything = [f["lfn"] async for f in transformation_files.unused_files(database, mixed["_id"], 1000)]
    assert sorted(everything) == sorted([f["_id"] for f in files] + ["/m/doc"])


async def test_on_the_build_open_tasks_and_unused_files_are_read_from_their_indexes(
    database: AsyncDatabase[Document],
) -> None:
    """The reads' promises breached (a state, a status held in an array, which MongoDB's equality
    matches): what comes back shows the build read the index, not every document."""
    if not await serves_index_order(database):
        pytest.skip("the server is not Cairn's FerretDB build")
    doc = await _transformation(database)
    await database[tasks.TASKS].insert_many([
        {**tasks.document(doc["_id"], 1, ["/a"], {}), "state": "submitted"},
        {**tasks.document(doc["_id"], 2, ["/b"], {}), "state": ["submitted"]}])
    assert [t["number"] for t in await tasks.tasks_in(database, doc["_id"], ["submitted"], 10)] == [1]
    await transformation_files.add_files(database, doc["_id"], [{"_id": "/a", "size": 1}, {"_id": "/b", "size": 1}],
                                         None)
    await database[transformation_files.FILES].update_one({"lfn": "/b"}, {"$set": {"status": ["unused"]}})
    plain = transformation_files.unused_files(database, doc["_id"], 10, grouped=False)
    assert [f["lfn"] async for f in plain] == ["/a"]
    # Grouped too (the group values are ordered by Cairn): the index is read.
    assert [f["lfn"] async for f in transformation_files.unused_files(database, doc["_id"], 10)] == ["/a"]
