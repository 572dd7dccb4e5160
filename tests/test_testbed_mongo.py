"""The database of the test bed answers and keeps what is written to it."""

from __future__ import annotations

import os

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document


async def test_database_stores_and_returns_a_document(database: AsyncDatabase[Document]) -> None:
    await database.probe.insert_one({"_id": "/vo/probe", "size": 3, "payload": b"abc"})
    doc = await database.probe.find_one({"_id": "/vo/probe"})
    assert doc is not None
    assert doc["size"] == 3
    assert bytes(doc["payload"]) == b"abc"


async def test_unique_index_refuses_a_duplicate(database: AsyncDatabase[Document]) -> None:
    from pymongo.errors import DuplicateKeyError

    await database.probe.create_index("guid", unique=True)
    await database.probe.insert_one({"_id": "a", "guid": "g1"})
    try:
        await database.probe.insert_one({"_id": "b", "guid": "g1"})
    except DuplicateKeyError:
        pass
    else:
        raise AssertionError("a duplicate GUID was accepted")
    assert await database.probe.count_documents({}) == 1


async def test_concurrent_increments_are_all_kept(database: AsyncDatabase[Document]) -> None:
    """Single-document writes are atomic (MongoDB's guarantee, which leases and counters rely on)."""
    import asyncio

    await database.probe.insert_one({"_id": "counter", "n": 0})
    await asyncio.gather(*(database.probe.update_one({"_id": "counter"}, {"$inc": {"n": 1}}) for _ in range(100)))
    doc = await database.probe.find_one({"_id": "counter"})
    assert doc is not None and doc["n"] == 100


async def test_guarded_updates_let_exactly_one_writer_win(database: AsyncDatabase[Document]) -> None:
    import asyncio

    await database.probe.insert_many([{"_id": i, "state": "queued"} for i in range(20)])
    results = await asyncio.gather(*(
        database.probe.update_one({"_id": i % 20, "state": "queued"}, {"$set": {"state": "taken"}})
        for i in range(80)
    ))
    assert sum(r.modified_count for r in results) == 20


async def test_ensuring_indexes_twice_is_harmless(database: AsyncDatabase[Document]) -> None:
    from kernel.db import IndexSpec, ensure_indexes, serves_secondary_indexes

    specs = [IndexSpec("probe", [("a", 1)], name="probe_a", unique=True, sparse=True),
             IndexSpec("probe", [("b", 1), ("c", -1)], name="probe_bc")]
    await ensure_indexes(database, specs)
    await ensure_indexes(database, specs)
    made = set(await database.probe.index_information())
    assert "probe_a" in made
    # A non-unique index is made only where a query can use it (not on FerretDB's SQLite backend).
    assert ("probe_bc" in made) == await serves_secondary_indexes(database, "probe")


async def test_a_retired_index_is_dropped_and_nothing_else(database: AsyncDatabase[Document]) -> None:
    from kernel.db import IndexSpec, ensure_indexes

    await database.retiring.create_index([("a", 1), ("b", 1)], name="retiring_old", unique=True)
    await database.retiring.create_index([("a", 1)], name="retiring_kept", unique=True)
    specs = [IndexSpec("retiring", [("a", 1)], name="retiring_kept", unique=True),
             IndexSpec("retiring", [("a", 1), ("b", 1)], name="retiring_old", unique=True, retired=True)]
    for _ in range(2):  # the second finds nothing to drop
        await ensure_indexes(database, specs)
        assert set(await database.retiring.index_information()) == {"_id_", "retiring_kept"}


async def test_the_server_says_whether_it_reads_secondary_indexes(database: AsyncDatabase[Document]) -> None:
    from kernel.db import serves_secondary_indexes

    await database.probe.insert_one({"_id": 1, "b": 2})
    if os.environ.get("CAIRN_MONGODB_URI"):
        pytest.skip("a given server: its kind is not known here")
    # The test bed's own server: mongod reads secondary indexes; FerretDB (started on SQLite) does not.
    ferretdb = "ferretdbVersion" in await database.client.admin.command("buildInfo")
    assert await serves_secondary_indexes(database, "probe") is not ferretdb
