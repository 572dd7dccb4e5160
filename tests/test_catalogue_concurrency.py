"""Concurrent bulk registrations over overlapping LFNs: no duplicates, a correct success/failure split."""

from __future__ import annotations

import asyncio

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import DIRECTORIES
from catalogue.files import FILES
from kernel.db import Document
from tests.fixtures.api import RunningApi

TASKS = 100


def batch(task: int) -> list[dict]:
    # Tasks overlap in LFNs; every third task disagrees on the checksum.
    start = (task % 10) * 5
    checksum = "bbbbbbbb" if task % 3 == 0 else "aaaaaaaa"
    return [{"lfn": f"/cta/conc/d{j % 4}/f{j:03d}", "size": 100, "adler32": checksum,
             "replicas": [{"se": "CERN-DISK" if task % 2 else "DESY-DISK"}]} for j in range(start, start + 20)]


async def test_concurrent_registrations_leave_one_record_per_lfn(
    api: RunningApi, catalogue_db: AsyncDatabase[Document]
) -> None:
    async with api.client() as client:
        results = await asyncio.gather(*(client.register_files(batch(t)) for t in range(TASKS)))
    stored = {d["_id"]: d for d in await catalogue_db[FILES].find({}).to_list()}
    lfns = {f["lfn"] for t in range(TASKS) for f in batch(t)}
    assert set(stored) == lfns
    assert await catalogue_db[FILES].count_documents({}) == len(lfns)
    for task, result in enumerate(results):
        for item in batch(task):
            lfn = item["lfn"]
            if stored[lfn]["adler32"] == item["adler32"]:
                assert lfn in result["successful"] and lfn not in result["failed"], (task, lfn)
            else:
                assert "adler32" in result["failed"][lfn] and lfn not in result["successful"], (task, lfn)
    dirs = [d["_id"] for d in await catalogue_db[DIRECTORIES].find({}).to_list()]
    assert sorted(dirs) == sorted({"/cta", "/cta/conc", *(f"/cta/conc/d{i}" for i in range(4))})
    for doc in stored.values():
        ses = [r["se"] for r in doc["replicas"]]
        assert len(ses) == len(set(ses)), doc["_id"]
