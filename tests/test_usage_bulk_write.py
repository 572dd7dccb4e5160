"""The usage counters one bulk call changes are written together: one unordered bulk write of
upserted `$inc`s (in commands of `kernel.db.write_chunk`), not a round trip per counter, and they
still equal a recount; and how many statements a write command carries on each kind of server."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files, remove_files
from catalogue.usage import USAGE, rebuild
from kernel.db import (
    STOCK_FERRETDB_WRITE_CHUNK,
    WRITE_CHUNK,
    Document,
    bulk_write_chunked,
    increment,
    write_chunk,
    write_chunk_for,
)
from tests.fixtures.catalogue import ADMIN


async def update_commands(db: AsyncDatabase[Document]) -> int:
    """How many `update` commands the database server has run (its own counter)."""
    status = await db.client.admin.command("serverStatus")
    return int(status["metrics"]["commands"]["update"]["total"])


async def test_one_register_call_over_120_directories_writes_its_counters_in_one_bulk_write(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    files: list[dict[str, Any]] = [{"lfn": f"/vo/tree/d{d:03d}/f{i}", "size": 10 + i, "adler32": "00000001",
                                   "replicas": [{"se": "CERN-DISK"}, {"se": "DESY-DISK"}]}
                                  for d in range(120) for i in range(3)]
    counters_before = await db[USAGE].count_documents({})
    before = await update_commands(db)
    outcome = await register_files(db, ADMIN, files)
    updates = await update_commands(db) - before
    assert not outcome["failed"]
    counters = await db[USAGE].count_documents({}) - counters_before
    assert counters >= 120 + 2 + 2  # 120 directories, /vo/tree, /vo, / and the two SEs
    # One bulk write of the counters; anything else the call updates is a constant few commands.
    chunk = await write_chunk(db[USAGE])
    assert updates <= math.ceil(counters / chunk) + 2, (updates, counters)
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]

    before = await update_commands(db)
    await remove_files(db, ADMIN, [f["lfn"] for f in files[::2]], force=True)
    assert await update_commands(db) - before <= math.ceil(counters / chunk) + 2
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]


def test_write_commands_carry_fifty_statements_only_on_a_ferretdb_without_cairns_fix() -> None:
    assert write_chunk_for({"version": "8.0.4"}) == WRITE_CHUNK  # MongoDB
    assert write_chunk_for({"version": "7.0.42", "ferretdbVersion": "v1.24.2-cairn.6"}) == WRITE_CHUNK
    assert write_chunk_for({"version": "7.0.42", "ferretdbVersion": "v1.24.2-cairn.12"}) == WRITE_CHUNK
    assert write_chunk_for({"version": "7.0.42", "ferretdbVersion": "v1.24.2-cairn.5"}) == STOCK_FERRETDB_WRITE_CHUNK
    assert write_chunk_for({"version": "7.0.42", "ferretdbVersion": "v1.24.0"}) == STOCK_FERRETDB_WRITE_CHUNK


async def test_the_test_database_takes_whole_bulk_writes_and_answers_them(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    """The build the tests run on is Cairn's: 1000 statements per command, on existing documents."""
    collection = catalogue_db["chunked"]
    assert await write_chunk(collection) == WRITE_CHUNK
    await collection.insert_many([{"_id": f"d{i:04d}", "n": 0} for i in range(WRITE_CHUNK)])
    before = await update_commands(catalogue_db)
    counts = await asyncio.wait_for(bulk_write_chunked(
        collection, [UpdateOne({"_id": f"d{i:04d}"}, increment({"n": 1})) for i in range(WRITE_CHUNK)]), timeout=60)
    # one command, not 20 (a constant few more if anything else updates meanwhile)
    assert counts.modified_count == WRITE_CHUNK and await update_commands(catalogue_db) - before <= 2
    assert {doc["n"] async for doc in collection.find({})} == {1}
