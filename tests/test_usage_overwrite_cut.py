"""An overwrite whose server dies between writing the files' new sizes and counting them is
counted exactly once all the same: the next transfer worker's sweep settles the round's count
from the files' overwrite writer (`catalogue.overwrite_counts`). A round that only stalled there
and resumes after the sweep counts nothing more; a rebuild in between leaves nothing for either
to count again. Each is checked by a recount (`usage rebuild --dry-run`)."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import overwrite_counts, usage_claims
from catalogue.collection_names import FILES
from catalogue.files import register_files
from catalogue.replicas import overwrite_files
from catalogue.usage import NOTES, USAGE, USAGE_CLAIMS, directory_usage, rebuild, se_usage
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import stalled_call
from tests.fixtures.usage_cuts import STALE_S, Killed, killed_at_first_count, next_worker_sweeps

LFNS = [f"/vo/over/d{i % 2}/f{i}" for i in range(3)]
NEW = {lfn: {"size": 250, "adler32": "00000002", "replicas": [{"se": "DESY-DISK", "url": f"file:///x{lfn}"}]}
       for lfn in LFNS}


async def _registered(db: AsyncDatabase[Document]) -> None:
    outcome = await register_files(db, ADMIN, [{"lfn": lfn, "size": 100, "adler32": "00000001",
                                               "replicas": [{"se": "CERN-DISK"}]} for lfn in LFNS])
    assert sorted(outcome["successful"]) == sorted(LFNS)


async def _exact(db: AsyncDatabase[Document]) -> None:
    assert await directory_usage(db, "/vo/over") == {"path": "/vo/over", "files": 3, "bytes": 750}
    assert {row["se"]: (row["replicas"], row["bytes"]) for row in await se_usage(db) if row["replicas"]} == {
        "DESY-DISK": (3, 750)}
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]
    assert [d["_id"] for d in await db[USAGE].find({}).to_list() if d.get(NOTES)] == []
    assert await db[USAGE_CLAIMS].count_documents({"kind": overwrite_counts.KIND}) == 0


async def test_files_overwritten_by_a_server_killed_before_counting_them_are_counted_by_the_sweep(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    await _registered(catalogue_db)
    with killed_at_first_count(), pytest.raises(Killed):
        await overwrite_files(catalogue_db, NEW)
    assert {d["size"] for d in await catalogue_db[FILES].find({}, {"size": 1}).to_list()} == {250}
    await next_worker_sweeps(catalogue_db, settings)
    await _exact(catalogue_db)


async def test_an_overwrite_stalled_before_counting_counts_nothing_after_the_sweep_counted_for_it(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    await _registered(catalogue_db)
    async with stalled_call(settings, lambda db: overwrite_files(db, NEW), usage_claims.settle.__code__) as outcome:
        await asyncio.sleep(STALE_S)
        assert await overwrite_counts.settle_stale(catalogue_db, STALE_S) == 1
        await _exact(catalogue_db)
    assert outcome["result"] == set(LFNS)
    await _exact(catalogue_db)


async def test_a_rebuild_after_a_killed_overwrite_leaves_the_sweep_nothing_to_count_again(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    await _registered(catalogue_db)
    with killed_at_first_count(), pytest.raises(Killed):
        await overwrite_files(catalogue_db, NEW)
    assert (await rebuild(catalogue_db))["drifted"] > 0
    await next_worker_sweeps(catalogue_db, settings)
    await _exact(catalogue_db)
