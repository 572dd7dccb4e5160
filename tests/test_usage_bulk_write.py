"""The usage counters one bulk call changes are written together: one unordered bulk write of
upserted `$inc`s (in commands of WRITE_CHUNK), not a round trip per counter, and they still
equal a recount."""

from __future__ import annotations

import math

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files, remove_files
from catalogue.usage import USAGE, rebuild
from kernel.db import WRITE_CHUNK, Document
from tests.fixtures.catalogue import ADMIN


async def update_commands(db: AsyncDatabase[Document]) -> int:
    """How many `update` commands the database server has run (its own counter)."""
    status = await db.client.admin.command("serverStatus")
    return int(status["metrics"]["commands"]["update"]["total"])


async def test_one_register_call_over_120_directories_writes_its_counters_in_one_bulk_write(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    files = [{"lfn": f"/vo/tree/d{d:03d}/f{i}", "size": 10 + i, "adler32": "00000001",
              "replicas": [{"se": "CERN-DISK"}, {"se": "DESY-DISK"}]} for d in range(120) for i in range(3)]
    counters_before = await db[USAGE].count_documents({})
    before = await update_commands(db)
    outcome = await register_files(db, ADMIN, files)
    updates = await update_commands(db) - before
    assert not outcome["failed"]
    counters = await db[USAGE].count_documents({}) - counters_before
    assert counters >= 120 + 2 + 2  # 120 directories, /vo/tree, /vo, / and the two SEs
    # One bulk write of the counters; anything else the call updates is a constant few commands.
    assert updates <= math.ceil(counters / WRITE_CHUNK) + 2, (updates, counters)
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]

    before = await update_commands(db)
    await remove_files(db, ADMIN, [f["lfn"] for f in files[::2]], force=True)
    assert await update_commands(db) - before <= math.ceil(counters / WRITE_CHUNK) + 2
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]
