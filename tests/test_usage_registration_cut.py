"""A registration whose API server dies between writing its file records and counting them is
counted exactly once all the same: the next transfer worker's sweep settles the count the call
noted (`catalogue.registration_counts`). A call that only stalled there and resumes after the
sweep counts nothing more; a rebuild in between leaves nothing for either to count again. Each
is checked by a recount (`usage rebuild --dry-run`)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.components import index_specs
from catalogue import registration_counts, usage_claims
from catalogue.collection_names import FILES
from catalogue.directories import DIRECTORIES
from catalogue.files import register_files
from catalogue.usage import KEYS, NOTES, PENDING, USAGE, USAGE_CLAIMS, directory_usage, rebuild, se_usage
from kernel.db import Document, ensure_indexes, serves_index_order
from kernel.errors import InvalidInput
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import stalled_call
from tests.fixtures.usage_cuts import STALE_S, Killed, killed_at_first_count, next_worker_sweeps

SIZE = 100
LFNS = [f"/vo/cut/d{i % 2}/f{i}" for i in range(4)]
FILES_IN = [{"lfn": lfn, "size": SIZE, "adler32": "00000001", "replicas": [{"se": "CERN-DISK"}]} for lfn in LFNS]


async def _exact(db: AsyncDatabase[Document]) -> None:
    assert (await directory_usage(db, "/vo/cut")) == {"path": "/vo/cut", "files": len(LFNS), "bytes": len(LFNS) * SIZE}
    assert {row["se"]: (row["replicas"], row["bytes"]) for row in await se_usage(db)} == {
        "CERN-DISK": (len(LFNS), len(LFNS) * SIZE)}
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]
    assert await _noted(db) == []


async def _noted(db: AsyncDatabase[Document]) -> list[str]:
    """The usage records still carrying a registration's note."""
    return sorted(d["_id"] for d in await db[USAGE].find({}).to_list() if d.get(NOTES))


async def test_files_registered_by_a_server_killed_before_counting_them_are_counted_by_the_sweep(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    with killed_at_first_count(), pytest.raises(Killed):
        await register_files(catalogue_db, ADMIN, FILES_IN)
    assert await catalogue_db[FILES].count_documents({}) == len(LFNS)
    await next_worker_sweeps(catalogue_db, settings)
    await _exact(catalogue_db)


async def test_a_registration_stalled_before_counting_counts_nothing_after_the_sweep_counted_for_it(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    """Frozen (in its own thread, client and loop: another process) with its records written
    and their count about to be sent; the sweep counts them; thawed, its count misses (the
    notes are gone) and it counts nothing."""
    async with stalled_call(settings, lambda db: register_files(db, ADMIN, FILES_IN),
                            usage_claims.settle.__code__) as outcome:
        await asyncio.sleep(STALE_S)
        assert await registration_counts.settle_stale(catalogue_db, STALE_S) == 1
        await _exact(catalogue_db)
    assert sorted(outcome["result"]["successful"]) == sorted(LFNS)
    await _exact(catalogue_db)


async def test_a_rebuild_after_the_kill_leaves_the_sweep_nothing_to_count_again(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    with killed_at_first_count(), pytest.raises(Killed):
        await register_files(catalogue_db, ADMIN, FILES_IN)
    report = await rebuild(catalogue_db)
    assert report["drifted"] > 0 and not report["moved"]
    assert await _noted(catalogue_db) == []
    await next_worker_sweeps(catalogue_db, settings)
    await _exact(catalogue_db)


async def test_a_live_registration_is_not_counted_by_the_sweep(catalogue_db: AsyncDatabase[Document]) -> None:
    """Settled by itself: the sweep finds nothing left, however old the call."""
    await register_files(catalogue_db, ADMIN, FILES_IN)
    await asyncio.sleep(STALE_S)
    assert await registration_counts.settle_stale(catalogue_db, STALE_S) == 0
    await _exact(catalogue_db)


async def test_on_the_build_the_sweep_reads_only_pending_claims_from_their_index(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    """A register call's claim stays for good, one per call: the sweep, every 30 s in each
    worker, reads the PENDING ones from their index. The read's promise breached (a time held
    in an array, which a scan's `$lt` matches) shows which way it read."""
    if not await serves_index_order(catalogue_db):
        pytest.skip("the server is not Cairn's FerretDB build")
    await ensure_indexes(catalogue_db, index_specs())
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    await catalogue_db[USAGE_CLAIMS].insert_many([{"_id": "settled"}, {"_id": "dead", PENDING: old, KEYS: []},
                                                  {"_id": "breached", PENDING: [old], KEYS: []}])
    assert [c["_id"] for c in await usage_claims.stale(catalogue_db, 60, None)] == ["dead"]


async def test_a_registration_whose_directories_would_not_fit_its_claim_is_refused_before_any_write(
    catalogue_db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(usage_claims, "MAX_NOTED_BYTES", 200)
    lfns = [f"/vo/wide/d{i}/f" for i in range(20)]
    with pytest.raises(InvalidInput, match="split it"):
        await register_files(catalogue_db, ADMIN, [{"lfn": lfn, "size": SIZE, "adler32": "00000001",
                                                   "replicas": [{"se": "CERN-DISK"}]} for lfn in lfns])
    assert await catalogue_db[FILES].count_documents({}) == 0
    assert await catalogue_db[DIRECTORIES].count_documents({"_id": {"$regex": "^/vo/wide"}}) == 0
    assert await catalogue_db[USAGE_CLAIMS].count_documents({}) == 0
    ok = lfns[0]  # a call within the bound goes through
    assert ok in (await register_files(catalogue_db, ADMIN, [{"lfn": ok, "size": SIZE, "adler32": "00000001",
                                                             "replicas": [{"se": "CERN-DISK"}]}]))["successful"]
