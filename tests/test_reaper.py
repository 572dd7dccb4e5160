"""The reaper: deletion requests (one replica, or every replica when asked), space cleanup to the
low-water mark by least recent use, and never the last replica or a protected one."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel import lease
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, replica_status, se_root
from transfers import queueing
from transfers import requests as rq
from transfers.deletion import Refused, retire
from transfers.reaper import Reaper, eviction_candidates, used_bytes

KIB = 1024


async def _requests(db: AsyncDatabase[Document]) -> dict[str, Document]:
    return {d["lfn"]: d async for d in db[rq.REQUESTS].find({})}


async def test_a_deletion_request_removes_the_replica_and_its_bytes(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a, b], ["/vo/f"])
    await queueing.submit(database, "delete", [{"lfn": "/vo/f", "dest_se": "A"}], requester="t")
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    request = (await _requests(database))["/vo/f"]
    assert request["state"] == "done" and request["result"] == {"deleted": ["A"]}
    assert await replica_status(database, "/vo/f", "A") is None
    assert not (se_root(a) / "vo/f").exists()
    assert (se_root(b) / "vo/f").exists() and await replica_status(database, "/vo/f", "B") == "available"


async def test_the_last_replica_is_kept_unless_every_replica_is_asked_for(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a], ["/vo/one"])
    await put_files(database, [a, b], ["/vo/all"])
    await queueing.submit(database, "delete", [{"lfn": "/vo/one", "dest_se": "A"}], requester="t")
    await queueing.submit(database, "delete", [{"lfn": "/vo/all"}], requester="t")
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    requests = await _requests(database)
    assert requests["/vo/one"]["state"] == "failed" and "last available replica" in requests["/vo/one"]["last_error"]
    assert await replica_status(database, "/vo/one", "A") == "available" and (se_root(a) / "vo/one").exists()
    assert requests["/vo/all"]["state"] == "done" and sorted(requests["/vo/all"]["result"]["deleted"]) == ["A", "B"]
    assert not (se_root(a) / "vo/all").exists() and not (se_root(b) / "vo/all").exists()


async def test_a_locked_replica_is_not_deleted_by_a_request_naming_its_se(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a, b], ["/vo/f"])
    await database["files"].update_one({"_id": "/vo/f"}, {"$set": {"replicas.0.locks": 2}})
    await queueing.submit(database, "delete", [{"lfn": "/vo/f", "dest_se": "A"}], requester="t")
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    request = (await _requests(database))["/vo/f"]
    assert request["state"] == "failed" and "rule lock" in request["last_error"]
    assert (se_root(a) / "vo/f").exists()


async def test_two_retirements_of_the_last_two_copies_cannot_both_succeed(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a, b], ["/vo/f"])
    assert await retire(database, "/vo/f", "A", allow_last=False) is not None
    try:
        await retire(database, "/vo/f", "B", allow_last=False)
        raise AssertionError("the last available copy was retired")
    except Refused as exc:
        assert "last available replica" in str(exc)


@pytest.mark.parametrize("batch", [1000, 2])
async def test_a_full_se_is_cleaned_to_low_water_least_recently_used_first(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, batch: int,
) -> None:
    # 10 files of 1 KiB on a 10 KiB SE (100% > 90% high water) → down to 50% low water, in one
    # cycle also when that takes several batches (chosen from one read of the SE's replicas).
    full = disk_se("FULL", tmp_path / "full", total_bytes=10 * KIB, high_water=0.9, low_water=0.5)
    other = disk_se("OTHER", tmp_path / "other")
    await add_ses(database, full, other)
    lfns = [f"/vo/f{i}" for i in range(10)]
    await put_files(database, [full, other], lfns[:8], size=KIB)
    await put_files(database, [full], lfns[8:], size=KIB)  # f8, f9 exist only on FULL
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i, lfn in enumerate(lfns):  # f0 used longest ago ... f9 most recently
        await database["files"].update_one(
            {"_id": lfn, "replicas.0.se": "FULL"}, {"$set": {"replicas.0.accessed": base + dt.timedelta(hours=i)}})
    await database["files"].update_one({"_id": "/vo/f0", "replicas.0.se": "FULL"},
                                       {"$set": {"replicas.0.protected": True}})
    await Reaper(fast_settings(settings, reaper_batch=batch), database).run(max_cycles=1)
    left = {lfn for lfn in lfns if await replica_status(database, lfn, "FULL") is not None}
    # f0 protected, f1..f5 deleted (5 KiB freed → 5 KiB = low water), f6.. kept; f8, f9 last copies.
    assert left == {"/vo/f0", "/vo/f6", "/vo/f7", "/vo/f8", "/vo/f9"}
    assert await used_bytes(database, "FULL") == 5 * KIB
    assert sorted(p.name for p in (se_root(full) / "vo").iterdir()) == ["f0", "f6", "f7", "f8", "f9"]


async def test_eviction_candidates_are_the_least_recently_used_whatever_the_limit(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    full, other = disk_se("FULL", tmp_path / "full"), disk_se("OTHER", tmp_path / "other")
    await add_ses(database, full, other)
    lfns = [f"/vo/lru/f{i:02d}" for i in range(30)]
    await put_files(database, [full, other], lfns, size=KIB)
    hours = random.Random(5).sample(range(100), len(lfns))
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for lfn, hour in zip(lfns, hours, strict=True):
        await database["files"].update_one(
            {"_id": lfn, "replicas.0.se": "FULL"}, {"$set": {"replicas.0.accessed": base + dt.timedelta(hours=hour)}})
    everyone = await eviction_candidates(database, "FULL", limit=100)
    assert [c["lfn"] for c in everyone] == [lfn for _, lfn in sorted(zip(hours, lfns, strict=True))]
    for limit in (1, 7, 29):
        assert await eviction_candidates(database, "FULL", limit=limit) == everyone[:limit]


async def test_a_named_lease_has_one_holder_until_it_expires(database: AsyncDatabase[Document]) -> None:
    assert await lease.acquire(database, "reaper:X", "one", lease_s=60)
    assert not await lease.acquire(database, "reaper:X", "two", lease_s=60)
    assert await lease.acquire(database, "reaper:X", "one", lease_s=0.01)
    await lease.release(database, "reaper:X", "nobody")
    await asyncio.sleep(0.05)
    assert await lease.acquire(database, "reaper:X", "two", lease_s=60)
