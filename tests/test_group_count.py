"""Counts per combination of fields (`kernel.db.count_by`, what `GET /metrics` reports) answer
like a recount on any database, with and without the index that Cairn's FerretDB build reads
them from (`IndexSpec.group_count`), and whatever the values: strings of every kind, null,
missing, and values the build cannot count in an index (numbers, arrays), where the build
groups the documents as without it."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import GROUP_COUNT, Document, IndexSpec, cairn_build_at, count_by, ensure_indexes

ODD = ["", "done", 'quote " and \\ backslash', "new\nline", "é日本\u2028", "a", "ab", "b"]
FIELDS = ["state", "kind", "dest_se", "vo"]


def document(i: int, rng: random.Random) -> Document:
    doc: Document = {"_id": f"r{i:05d}", "state": rng.choice(ODD[:5]), "kind": rng.choice(["transfer", "stage"])}
    for field, values in (("dest_se", ["SE-A", "SE-B", None]), ("vo", ["a", "ab", "b", None])):
        if rng.random() < 0.8:
            doc[field] = rng.choice(values)  # else missing
    return doc


def recount(docs: list[Document], fields: list[str], absent: dict[str, Any]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(absent.get(f) if d.get(f) is None else d[f] for f in fields) for d in docs)


def counted(rows: list[Document], fields: list[str]) -> Counter[tuple[Any, ...]]:
    keys = [tuple(row[f] for f in fields) for row in rows]
    assert len(keys) == len(set(keys)), f"one row per combination: {rows}"
    return Counter({key: row["n"] for key, row in zip(keys, rows, strict=True)})


@pytest.mark.parametrize("indexed", [True, False])
async def test_counts_answer_like_a_recount(database: AsyncDatabase[Document], indexed: bool) -> None:
    rng = random.Random(17)
    docs = [document(i, rng) for i in range(400)]
    name = f"group_probe_{indexed}"
    if indexed:
        await ensure_indexes(database, [IndexSpec(name, [(f, 1) for f in FIELDS], name="probe_by_all",
                                                  group_count=True)])
    await database[name].insert_many(docs)
    for fields in (FIELDS, ["state", "kind"], ["state"], ["vo"]):
        for absent in ({}, {"vo": "local"}):
            assert counted(await count_by(database[name], fields, absent=absent), fields) == \
                recount(docs, fields, absent), (fields, absent)
    # Values the index cannot count by (a number, an array): the documents are grouped instead.
    odd: list[Document] = [{"_id": "n1", "state": 1, "kind": "transfer"},
                           {"_id": "n2", "state": 1.0, "kind": "transfer"},
                           {"_id": "n3", "state": ["x"], "kind": "stage"}]
    await database[name].insert_many(odd)
    rows = await count_by(database[name], ["state", "kind"])
    assert sum(row["n"] for row in rows) == len(docs) + 3
    assert {(repr(row["state"]), row["kind"]): row["n"] for row in rows if not isinstance(row["state"], str)} == \
        {("1", "transfer"): 2, ("['x']", "stage"): 1}


async def test_the_build_counts_from_the_index(database: AsyncDatabase[Document]) -> None:
    """The group_count index is made on Cairn's FerretDB build from its eleventh version, and
    nowhere else (MongoDB groups without it); on the build, the counts come from it, which their
    order shows: by the values' JSON text, where the documents grouped come in the order they
    were first met."""
    probe = database["group_order_probe"]
    await ensure_indexes(database, [IndexSpec("group_order_probe", [("state", 1)], name="probe_by_state",
                                              group_count=True)])
    build = await cairn_build_at(database)
    assert ("probe_by_state" in await probe.index_information()) == (build >= 11)
    if build < 11:
        pytest.skip("the server is not Cairn's FerretDB build (cairn.11 or later)")
    await probe.insert_many([{"_id": i, "state": state} for i, state in enumerate(["z", "a", "m", "a", "z", "z"])])
    pipeline = [{"$group": {"_id": {"state": "$state"}, "n": {"$sum": 1}}}]
    grouped = await (await probe.aggregate(pipeline)).to_list()
    from_index = await (await probe.aggregate(pipeline, comment=GROUP_COUNT)).to_list()
    assert [(d["_id"]["state"], d["n"]) for d in grouped] == [("z", 3), ("a", 2), ("m", 1)]
    assert [(d["_id"]["state"], d["n"]) for d in from_index] == [("a", 2), ("m", 1), ("z", 3)]


async def test_the_build_counts_one_snapshot(database: AsyncDatabase[Document]) -> None:
    """On the build, a count is several statements (a seek per value, a count per combination)
    read in one transaction: while documents move between states, the counts always add up to
    the documents, as one query's would. (MongoDB's own `$group` gives no such promise: a
    collection scan may meet a moved document twice.)"""
    if await cairn_build_at(database) < 11:
        pytest.skip("the server is not Cairn's FerretDB build (cairn.11 or later)")
    name = "group_snapshot_probe"
    await ensure_indexes(database, [IndexSpec(name, [("state", 1), ("vo", 1)], name="snapshot_by_state_vo",
                                              group_count=True)])
    await database[name].insert_many([{"_id": i, "state": "a", "vo": f"v{i % 3}"} for i in range(3000)])
    stop = asyncio.Event()

    async def flip() -> int:
        flips = 0
        while not stop.is_set():
            state, other = ("a", "b") if flips % 2 == 0 else ("b", "a")
            await database[name].update_many({"state": state}, {"$set": {"state": other}})
            flips += 1
        return flips

    flipper = asyncio.ensure_future(flip())
    try:
        totals = [sum(row["n"] for row in await count_by(database[name], ["state", "vo"])) for _ in range(150)]
    finally:
        stop.set()
        flips = await flipper
    assert flips >= 2, "the documents did not move while they were counted"
    assert set(totals) == {3000}
