"""Usage accounting: incremental counters equal a full recount after random operations."""

from __future__ import annotations

import asyncio
import random

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files, remove_files
from catalogue.moves import move
from catalogue.namespace import mkdir, remove
from catalogue.replicas import add_replicas, remove_replicas
from catalogue.usage import USAGE, USAGE_CLAIMS, directory_usage, rebuild, se_usage
from kernel.db import Document
from tests.fixtures.catalogue import ADMIN

SES = ("CERN-DISK", "CERN-TAPE", "DESY-DISK")


async def test_counters_equal_a_recount_after_1000_random_operations(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    rng = random.Random(42)
    lfns = [f"/vo/d{d}/s{s}/f{i}" for d in range(3) for s in range(3) for i in range(12)]
    sizes = {lfn: rng.randint(1, 10_000) for lfn in lfns}
    for _ in range(1000):
        kind = rng.choice(("register", "register", "remove", "add", "add", "drop"))
        picked = rng.sample(lfns, rng.randint(1, 4))
        if kind == "register":
            await register_files(db, ADMIN, [{"lfn": lfn, "size": sizes[lfn], "adler32": "00000001",
                                              "replicas": [{"se": rng.choice(SES)}]} for lfn in picked])
        elif kind == "remove":
            await remove_files(db, ADMIN, picked, force=True)
        elif kind == "add":
            await add_replicas(db, [{"lfn": lfn, "se": rng.choice(SES)} for lfn in picked])
        else:
            await remove_replicas(db, [{"lfn": lfn, "se": rng.choice(SES)} for lfn in picked])
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]
    assert report["checked"] > 10
    files = await db["files"].find({}, {"size": 1, "replicas.se": 1}).to_list()
    assert (await directory_usage(db, "/"))["files"] == len(files)
    assert (await directory_usage(db, "/vo/d1"))["bytes"] == sum(
        f["size"] for f in files if f["_id"].startswith("/vo/d1/"))
    per_se = {u["se"]: u["replicas"] for u in await se_usage(db)}
    assert sum(per_se.values()) == sum(len(f["replicas"]) for f in files)


async def test_moves_and_tree_removal_keep_counters_exact(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await register_files(db, ADMIN, [{"lfn": f"/vo/a/b/f{i}", "size": 10, "adler32": "00000001",
                                      "replicas": [{"se": "CERN-DISK"}]} for i in range(5)])
    await mkdir(db, ADMIN, "/vo/c")
    await move(db, ADMIN, "/vo/a/b", "/vo/c/b")
    await move(db, ADMIN, "/vo/c/b/f0", "/vo/a/f0")
    assert (await directory_usage(db, "/vo/c"))["files"] == 4 and (await directory_usage(db, "/vo/a"))["files"] == 1
    assert (await rebuild(db, fix=False))["drifted"] == 0
    await remove(db, ADMIN, "/vo/c", recursive=True)
    assert (await rebuild(db, fix=False))["drifted"] == 0
    assert {u["se"]: u["bytes"] for u in await se_usage(db)} == {"CERN-DISK": 10}


async def test_rebuild_reports_and_fixes_drift(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await register_files(db, ADMIN, [{"lfn": "/vo/x/f", "size": 5, "adler32": "00000001",
                                      "replicas": [{"se": "DESY-DISK"}]}])
    await db[USAGE].update_one({"_id": "dir:/vo"}, {"$inc": {"bytes": 100}})
    await db[USAGE].delete_one({"_id": "se:DESY-DISK"})
    report = await rebuild(db)
    assert report["drifted"] == 2, report
    assert report["drift"]["dir:/vo"] == {"stored": {"files": 1, "bytes": 105}, "recounted": {"files": 1, "bytes": 5}}
    assert (await rebuild(db, fix=False))["drifted"] == 0


async def test_a_batch_touching_hundreds_of_existing_counters_completes(catalogue_db: AsyncDatabase[Document]) -> None:
    # FerretDB 1.24 as released never answers an update command of 100+ statements on existing
    # documents; Cairn's build does (kernel.db.write_chunk sends it 1000), so this must not hang.
    for round in range(2):
        files = [{"lfn": f"/vo/d{i:03d}/f{round}", "size": 1, "adler32": "00000001"} for i in range(150)]
        await asyncio.wait_for(register_files(catalogue_db, ADMIN, files), timeout=60)
    assert (await directory_usage(catalogue_db, "/vo"))["files"] == 300


async def test_a_rebuild_claims_the_register_calls_it_counted_so_no_retry_counts_them_again(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    batch = [{"lfn": f"/vo/r/f{i}", "size": 10, "adler32": "00000001", "replicas": [{"se": "CERN-DISK"}]}
             for i in range(3)]
    await register_files(db, ADMIN, batch)
    await db[USAGE_CLAIMS].delete_many({})  # as if the call had died before claiming its records
    await db[USAGE].delete_many({})
    assert (await rebuild(db, fix=True))["drifted"] > 0
    again = await register_files(db, ADMIN, batch)
    assert [r["created"] for r in again["successful"].values()] == [False] * 3
    assert (await directory_usage(db, "/vo/r"))["files"] == 3
    assert (await rebuild(db, fix=False))["drifted"] == 0
