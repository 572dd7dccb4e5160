"""What the changes of `.ci/install-ferretdb` must keep true on any database: `$in` (checked by
set on the FerretDB build) answers like a recount, an `update` command of many statements
that modify existing documents answers (it hung on FerretDB 1.24 at 100), and documents come
back exactly as stored, field order included (the build decodes them in one pass and returns
unprojected ones without copying, and projections of top-level fields without copying either),
also through kernel.db.read_by_ids's overlapping slices and kernel.db.for_output's naive
datetimes; finds under kernel.db.INDEX_ORDER (read from an index on the build) answer like
finds sorted in memory, and kernel.db.find_by_values (a lone `$in` read from an index on the
build from cairn.14) like a recount."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import (
    INDEX_IN_BUILD,
    INDEX_ORDER,
    READ_SLICE,
    Document,
    IndexSpec,
    cairn_build_at,
    ensure_indexes,
    find_by_values,
    for_output,
    read_by_ids,
    serves_index_order,
)
from kernel.jsonio import dumps

ODD_STRINGS = ["", "plain", 'quote " and \\ backslash', "new\nline\ttab\x01", "é日本\u2028", "/cta/d/f.root"]


def stored(i: int) -> Document:
    """A document with every kind of value the catalogue stores, nested, varied by i."""
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=i * 1_000_003)
    text = ODD_STRINGS[i % len(ODD_STRINGS)]
    return {
        "_id": f"/cta/d{i % 7}/f{i:05d}.root", "size": i, "big": Int64(1 << 40) + i, "ratio": i / 7 - 3.5,
        "created": when, "md5": None, "ok": i % 2 == 0, "guid": ObjectId(f"{i:024x}"), "raw": bytes([i % 256]),
        "text": text, "tags": [text, i, {}, {"x": []}], "meta": {}, "empty": [],
        "replicas": [{"se": f"SE{i % 3}", "url": f"root://h//{text}", "status": "available", "created": when}],
        "nested": {"a": {"b": {"c": [i, {"d": text}]}}, "é": "ü"},
    }


async def test_documents_come_back_as_stored(database: AsyncDatabase[Document]) -> None:
    probe = database["stored_probe"]
    docs = [stored(i) for i in range(2 * READ_SLICE + 300)]
    await probe.insert_many(docs)
    by_id = {d["_id"]: d for d in docs}
    found = [d async for d in read_by_ids(probe, [*by_id, "/cta/missing"])]
    assert len(found) == len(docs)
    assert all(list(d.items()) == list(by_id[d["_id"]].items()) for d in found)
    projected = await probe.find({"_id": docs[5]["_id"]}, {"replicas": 1, "text": 1}).to_list()
    assert projected == [{"_id": docs[5]["_id"], "text": docs[5]["text"], "replicas": docs[5]["replicas"]}]


async def test_projections_answer_like_mongodb(database: AsyncDatabase[Document]) -> None:
    probe = database["projection_probe"]
    docs = [stored(i) for i in range(40)]
    del docs[3]["text"]  # an included field that is missing is left out
    await probe.insert_many(docs)

    def expected(doc: Document, fields: list[str], keep_id: bool = True, exclude: bool = False) -> Document:
        """`_id` first, then the included (or not excluded) fields in the stored document's order."""
        return {k: v for k, v in doc.items() if (k == "_id" and keep_id) or (k != "_id" and (k in fields) != exclude)}

    for projection, fields, keep_id, exclude in [
        ({"replicas": 1, "text": 1}, ["replicas", "text"], True, False),
        ({"text": True, "size": 1, "created": 1.0}, ["size", "created", "text"], True, False),
        ({"_id": 0, "nested": 1, "size": 1}, ["size", "nested"], False, False),
        ({"_id": 1}, [], True, False),
        ({"meta": 0, "text": 0, "tags": False}, ["meta", "text", "tags"], True, True),
        ({"_id": 0, "replicas": 0}, ["replicas"], False, True),
        ({"_id": 0}, [], False, True),
    ]:
        found = await probe.find({"_id": {"$in": [d["_id"] for d in docs]}}, projection).sort("_id", 1).to_list()
        want = [expected(d, fields, keep_id, exclude) for d in sorted(docs, key=lambda d: d["_id"])]
        assert [list(d.items()) for d in found] == [list(w.items()) for w in want], projection
    dotted = await probe.find({"_id": docs[0]["_id"]}, {"nested.a.b": 1, "replicas.se": 1}).to_list()
    nested = {"a": {"b": docs[0]["nested"]["a"]["b"]}}
    assert dotted == [{"_id": docs[0]["_id"], "replicas": [{"se": "SE0"}], "nested": nested}]


async def test_reads_for_output_give_the_same_json(database: AsyncDatabase[Document]) -> None:
    probe = database["output_probe"]
    docs = [{k: v for k, v in stored(i).items() if k != "raw"} for i in range(5)]  # (bytes are not JSON)
    await probe.insert_many(docs)
    aware = await probe.find().sort("_id", 1).to_list()
    naive = await for_output(probe).find().sort("_id", 1).to_list()
    assert aware[0]["created"].tzinfo is not None and naive[0]["created"].tzinfo is None
    assert [dumps(d) for d in naive] == [dumps(d) for d in aware]
    assert (await for_output(database)["output_probe"].find_one({"_id": docs[0]["_id"]}) or {})["created"] == \
        docs[0]["created"].replace(tzinfo=None)


async def test_a_read_by_ids_left_early_leaves_the_database_usable(database: AsyncDatabase[Document]) -> None:
    probe = database["stored_probe"]
    await probe.insert_many([stored(i) for i in range(3 * READ_SLICE)])
    reads = read_by_ids(probe, [stored(i)["_id"] for i in range(3 * READ_SLICE)], {"_id": 1})
    first = await anext(reads)
    await reads.aclose()  # the slices still in flight are cancelled
    assert first["_id"].startswith("/cta/")
    assert await probe.count_documents({}) == 3 * READ_SLICE


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


def matches(doc: Document, field: str, wanted: set[Any]) -> bool:
    """MongoDB's equality (or `$in`) of strings on a top-level field: the value, or an element of it."""
    value = doc.get(field, ())
    return any(isinstance(v, str) and v in wanted for v in (value if isinstance(value, list) else [value]))


async def test_string_field_filters_answer_like_a_recount(database: AsyncDatabase[Document]) -> None:
    """The build skips rows undecoded by top-level string equality, `$in` and `$or` of them; what
    MongoDB would match must still come back: arrays holding the value, escaped and non-ASCII
    text, fields after text that looks like structure, and values of other types (which must not
    match a string)."""
    probe = database["field_probe"]
    states = ["queued", "active", "done", 'q"uo\te', "é日本", "queued ", ""]
    docs: list[Document] = []
    for i in range(210):
        state: Any = states[i % len(states)]
        if i % 10 == 3:
            state = [state, "other"]  # an array holding the value
        elif i % 10 == 7:
            state = [None, 5, i] if i % 20 == 7 else {"state": "queued"}  # never a string match
        elif i % 10 == 9:
            state = ObjectId(f"{i:024x}")
        # Before `state`: text that looks like structure, and the same field in nested documents.
        doc = {"_id": f"r{i:03d}", "note": 'a"}],{[\\' + "\\", "history": [{"state": "queued"}, {"state": ["active"]}],
               "state": state, "kind": "transfer" if i % 3 else "stage", "n": i}
        if i % 11 == 0:
            del doc["state"]
        docs.append(doc)
    await probe.insert_many(docs)

    async def found(flt: Document) -> list[int]:
        return sorted(d["n"] for d in await probe.find(flt).to_list())

    for state in states:
        assert await found({"state": state}) == [d["n"] for d in docs if matches(d, "state", {state})], state
        assert await found({"state": {"$eq": state}, "n": {"$gte": 50}}) == \
            [d["n"] for d in docs if matches(d, "state", {state}) and d["n"] >= 50]
    some = {"queued", "é日本", "nowhere"}
    assert await found({"state": {"$in": sorted(some)}}) == [d["n"] for d in docs if matches(d, "state", some)]
    claimable = {"kind": {"$in": ["transfer"]}, "$or": [{"state": "queued", "n": {"$lt": 150}}, {"state": "active"}]}
    assert await found({"$and": [claimable, {"$or": [{"lease": None}, {"lease": {"$lt": 3}}]}]}) == [
        d["n"] for d in docs if d["kind"] == "transfer"
        and ((matches(d, "state", {"queued"}) and d["n"] < 150) or matches(d, "state", {"active"}))]
    assert await found({"$or": [{"state": "done"}, {"n": {"$lt": 5}}]}) == \
        [d["n"] for d in docs if matches(d, "state", {"done"}) or d["n"] < 5]
    changed = await probe.update_many({"state": "active", "kind": "stage"}, {"$set": {"seen": True}})
    assert changed.modified_count == len([d for d in docs if matches(d, "state", {"active"}) and d["kind"] == "stage"])
    assert await probe.count_documents({"state": "queued"}) == len([d for d in docs if matches(d, "state", {"queued"})])


async def test_one_update_command_of_300_modifying_statements_answers(database: AsyncDatabase[Document]) -> None:
    counters = database["update_probe"]
    ops = [UpdateOne({"_id": f"c{i}"}, {"$inc": {"n": Int64(1)}}, upsert=True) for i in range(300)]
    assert (await counters.bulk_write(ops, ordered=False)).upserted_count == 300
    modified = await asyncio.wait_for(counters.bulk_write(ops, ordered=False), timeout=60)
    assert modified.modified_count == 300
    assert sorted({d["n"] for d in await counters.find({}).to_list()}) == [2]


def queued(i: int, rng: random.Random, start: dt.datetime) -> Document:
    """A queue entry that keeps INDEX_ORDER's promises: string state and kind, one-digit
    priority, a date; some of them leased, some not due yet."""
    return {"_id": f"q{i:05d}", "state": rng.choice(["queued", "queued", "active", "done"]),
            "kind": rng.choice(["transfer", "stage"]), "priority": rng.randint(0, 9),
            "created": start + dt.timedelta(milliseconds=rng.randint(0, 10**9)),
            "not_before": start + dt.timedelta(seconds=rng.randint(-100, 100)),
            "lease_expires": rng.choice([None, start - dt.timedelta(seconds=1), start + dt.timedelta(seconds=60)]),
            "stage": {"next_poll": start + dt.timedelta(milliseconds=rng.randint(-10**6, 10**6))},
            **({"flag": rng.choice([True, False])} if rng.random() < 0.3 else {}),
            "holder": rng.choice([None, "w1:0a", "w2:1b", "w10:2c", 7, ""])}


async def test_index_order_reads_answer_like_an_in_memory_sort(database: AsyncDatabase[Document]) -> None:
    """Finds under INDEX_ORDER (the build reads their string equalities and their order from an
    index) answer what the same find without it answers (sorted in memory on the build), limits
    and the other conditions of the filter included, with the index made as Cairn makes it."""
    probe = database["order_probe"]
    await ensure_indexes(database, [
        IndexSpec("order_probe", [("state", 1), ("kind", 1), ("priority", -1), ("created", 1)], name="order_claim",
                  index_order=True),
        IndexSpec("order_probe", [("flag", 1)], name="order_flag", sparse=True, index_order=True),
        IndexSpec("order_probe", [("holder", 1)], name="order_holder", sparse=True, index_order=True),
        IndexSpec("order_probe", [("state", 1), ("stage.next_poll", 1)], name="order_poll", index_order=True)])
    rng = random.Random(17)
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    await probe.insert_many([queued(i, rng, start) for i in range(3000)])
    sort = [("priority", -1), ("created", 1)]
    unheld = {"$or": [{"lease_expires": None}, {"lease_expires": {"$lt": start}}]}
    poll = [("stage.next_poll", 1)]
    filters: list[tuple[Document, list[tuple[str, int]]]] = [
        ({"state": "queued", "kind": "transfer"}, sort),
        ({"state": "queued", "kind": "stage", "not_before": {"$lte": start}, **unheld}, sort),
        ({"$and": [{"state": "active"}, {"kind": "transfer"}, unheld]}, sort),
        ({"state": "queued", "kind": {"$in": ["transfer", "stage"]}}, sort),
        ({"state": "nowhere", "kind": "transfer"}, sort),
        ({"state": "active", "stage.next_poll": {"$lte": start}, **unheld}, poll),
        ({"flag": True, "state": {"$in": ["done", "active"]}}, sort),
        ({"flag": False}, poll),
        ({"holder": {"$gt": ""}, "lease_expires": {"$lt": start}}, poll),
        ({"holder": {"$gte": "w10", "$lt": "w2"}}, sort),
        ({"lease_expires": {"$lt": start}, "state": "queued"}, sort),
        ({"created": {"$gte": start + dt.timedelta(days=3), "$lt": start + dt.timedelta(days=8)}}, sort),
    ]
    for flt, sort in filters:
        for limit in (0, 1, 256):
            plain = await probe.find(flt, {"_id": 1}).sort(sort).limit(limit).to_list()
            ordered = await probe.find(flt, {"_id": 1}, comment=INDEX_ORDER).sort(sort).limit(limit).to_list()
            assert ordered == plain, (flt, limit)
            assert limit == 0 or len(plain) <= limit
    for flt, sort in filters[1:2] + filters[-1:]:
        assert len(await probe.find(flt, comment=INDEX_ORDER).sort(sort).to_list()) > 100


async def test_the_build_reads_index_order_from_the_index(database: AsyncDatabase[Document]) -> None:
    """On Cairn's FerretDB build the index of an `index_order` spec is made (the other secondary
    indexes are not: it serves none of them) and INDEX_ORDER finds are answered from it, which the
    promises' breach shows: the index holds JSON text, so priority 10 sorts before 9 (also at a
    dotted path), an array holding the state (or `true`) is not an equal string (or boolean), and a
    string bound compares JSON text (" w", whose text starts below the quote, is not above ""), as
    does a date bound (1990's twelve digits of milliseconds are not below 2026's thirteen)."""
    if not await serves_index_order(database):
        pytest.skip("the server is not Cairn's FerretDB build")
    probe = database["breach_probe"]
    specs = [IndexSpec("breach_probe", [("state", 1), ("priority", 1)], name="breach_order", index_order=True),
             IndexSpec("breach_probe", [("kind", 1)], name="breach_kind")]
    await ensure_indexes(database, specs)
    assert set(await probe.index_information()) == {"_id_", "breach_order"}
    await probe.insert_many([{"_id": "a", "state": "queued", "priority": 9, "stage": {"poll": 10}, "flag": True},
                             {"_id": "b", "state": "queued", "priority": 10, "stage": {"poll": 9}},
                             {"_id": "c", "state": ["queued"], "priority": 1, "stage": {"poll": 1}, "flag": [True]}])
    assert [d["_id"] for d in await probe.find({"flag": True}).sort("_id", 1).to_list()] == ["a", "c"]
    assert [d["_id"] for d in await probe.find({"flag": True}, comment=INDEX_ORDER).to_list()] == ["a"]
    await probe.insert_many([{"_id": "d", "holder": " w"}, {"_id": "e", "holder": "w"}, {"_id": "f", "holder": 5}])
    assert [d["_id"] for d in await probe.find({"holder": {"$gt": ""}}).sort("_id", 1).to_list()] == ["d", "e"]
    assert [d["_id"] for d in await probe.find({"holder": {"$gt": ""}}, comment=INDEX_ORDER).to_list()] == ["e"]
    old, new = dt.datetime(1990, 1, 1, tzinfo=dt.UTC), dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # 12 and 13 digits
    await probe.insert_many([{"_id": "g", "when": old}, {"_id": "h", "when": new}, {"_id": "i", "when": "2019"}])
    before = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert [d["_id"] for d in await probe.find({"when": {"$lt": before}}).sort("_id", 1).to_list()] == ["g", "h"]
    assert [d["_id"] for d in await probe.find({"when": {"$lt": before}}, comment=INDEX_ORDER).to_list()] == ["h"]
    for key, in_memory_order, index_order in (("priority", "cab", "ba"), ("stage.poll", "cba", "ab")):
        in_memory = await probe.find({"state": "queued"}).sort(key, 1).to_list()
        from_index = await probe.find({"state": "queued"}, comment=INDEX_ORDER).sort(key, 1).to_list()
        assert "".join(d["_id"] for d in in_memory) == in_memory_order
        assert "".join(d["_id"] for d in from_index) == index_order


async def test_find_by_values_answers_like_a_recount(database: AsyncDatabase[Document]) -> None:
    """`find_by_values` (one indexed `$in` per slice on the build from cairn.14, one find per value
    before) answers exactly the documents whose field holds one of the values: odd strings, values
    no document holds, more values than a slice, an `$in` the build does not take over (a value
    that is not a string) and a field beside a sparse index's missing values."""
    probe = database["values_probe"]
    await ensure_indexes(database, [IndexSpec("values_probe", [("guid", 1)], name="values_guid", unique=True,
                                              sparse=True, index_order=True)])
    odd = ODD_STRINGS
    docs: list[Document] = [{"_id": f"d{i:05d}", "guid": f"{odd[i % len(odd)]}-{i}"} for i in range(2500)]
    docs += [{"_id": "no-guid"}, {"_id": "null-guid", "guid": None}]
    await probe.insert_many(docs)
    rng = random.Random(14)
    for count in (1, 7, READ_SLICE + 301):
        values = [d["guid"] for d in rng.sample(docs[:2500], count)] + [f"missing-{i}" for i in range(count // 3)]
        found = await find_by_values(probe, "guid", values + values[:5], {"guid": 1})
        assert sorted(d["_id"] for d in found) == sorted(d["_id"] for d in docs[:2500] if d["guid"] in set(values))
    mixed = await probe.find({"guid": {"$in": [docs[3]["guid"], None]}}, {"_id": 1}, comment=INDEX_ORDER).to_list()
    assert sorted(d["_id"] for d in mixed) == sorted(["d00003", "no-guid", "null-guid"])


async def test_the_build_reads_a_lone_in_from_the_index(database: AsyncDatabase[Document]) -> None:
    """On the build from cairn.14, a find under INDEX_ORDER whose whole filter is one field's `$in`
    of strings is read from that field's index, which the promise's breach shows: an array holding
    the value is not the value. An `$in` beside another condition is not taken over (the handler
    matches the array)."""
    if await cairn_build_at(database) < INDEX_IN_BUILD:
        pytest.skip("the server is not Cairn's FerretDB build from cairn.14")
    probe = database["lone_in_probe"]
    await ensure_indexes(database, [IndexSpec("lone_in_probe", [("state", 1)], name="lone_in_state",
                                              index_order=True)])
    await probe.insert_many([{"_id": "a", "state": "queued", "n": 1}, {"_id": "b", "state": ["queued"], "n": 1},
                             {"_id": "c", "state": "done", "n": 1}])
    lone = {"state": {"$in": ["queued", "gone"]}}
    assert sorted(d["_id"] for d in await probe.find(lone).to_list()) == ["a", "b"]
    assert [d["_id"] for d in await probe.find(lone, comment=INDEX_ORDER).to_list()] == ["a"]
    beside = {**lone, "n": 1}
    assert sorted(d["_id"] for d in await probe.find(beside, comment=INDEX_ORDER).to_list()) == ["a", "b"]
