"""The database of the test bed answers and keeps what is written to it."""

from __future__ import annotations

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
