"""The bytes forced removals left are deleted a reaper cycle's batch at a time (issue 17), each
path's guards kept: a path released and registered again, or kept by its file, keeps its bytes; a
path whose removal is still at work waits; a reaper whose lease lapsed deletes nothing.

Before, the reaper deleted them one by one: about 40 ms and six round trips per file (2500 forced
removals took 100 s to delete on FerretDB)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import threading
from pathlib import Path
from types import CodeType

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import removed_paths
from catalogue.file_removal import claim_removals
from catalogue.files import register_files, remove_files
from catalogue.moved_paths import MOVED_PATHS, REMOVED
from catalogue.storage_elements import StorageElement, list_storage_elements
from kernel.db import Document
from kernel.settings import Settings
from storage_plugins.posix import PosixPlugin
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import freeze_at_first_call
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, se_root, write_bytes
from transfers import deletion
from transfers import requests as rq
from transfers.reaper import Reaper
from transfers.removed_bytes import REQUESTER, WAIT_S, delete_removed_paths, queue_removed

LEASE_S = 1.0


def _stored(se: StorageElement) -> list[Path]:
    return [path for path in se_root(se).rglob("*") if path.is_file()]


def _at(se: StorageElement, lfn: str) -> Path:
    return se_root(se) / se.protocols[0].physical_path(lfn).lstrip("/")


def _rows(lfns: list[str], *ses: str) -> list[dict[str, object]]:
    return [{"lfn": lfn, "size": 1, "adler32": "00000001", "replicas": [{"se": se} for se in ses]} for lfn in lfns]


async def _force_removed(db: AsyncDatabase[Document], ses: list[StorageElement], lfns: list[str]) -> None:
    await put_files(db, ses, lfns, size=16)
    removed = await remove_files(db, ADMIN, lfns, force=True)
    assert not removed["failed"] and all(answer["removed"] for answer in removed["successful"].values())


async def _holds(db: AsyncDatabase[Document]) -> int:
    return await db[MOVED_PATHS].count_documents({REMOVED: {"$exists": True}})


async def test_five_hundred_forced_removals_are_deleted_by_one_reaper_cycle(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    lfns = [f"/vo/many/f{i:03d}" for i in range(500)]
    await _force_removed(database, [a, b], lfns)
    assert len(_stored(a)) == len(_stored(b)) == 500
    await Reaper(fast_settings(settings), database).run(max_cycles=1)  # 1000 paths: one batch
    assert _stored(a) == [] and _stored(b) == []  # gone from the SEs themselves
    assert await _holds(database) == 0
    assert await database[rq.REQUESTS].count_documents({"requester": REQUESTER, "state": "done"}) == 1000
    again = await register_files(database, ADMIN, _rows(lfns, "A", "B"))
    assert len(again["successful"]) == 500 and not again["failed"]  # the paths are free


async def test_in_a_mixed_batch_a_path_registered_again_or_kept_by_its_file_keeps_its_bytes(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    gone = [f"/vo/mixed/gone{i:02d}" for i in range(20)]
    again = [f"/vo/mixed/again{i}" for i in range(5)]
    stayed = [f"/vo/mixed/stayed{i}" for i in range(5)]
    await _force_removed(database, [a], gone + again)
    await put_files(database, [a], stayed, size=16)
    # A removal of `stayed` that died between its holds and its delete: the files kept their replicas.
    kept = await database["files"].find({"_id": {"$in": stayed}}, {"guid": 1, "replicas": 1}).to_list()
    await removed_paths.hold_removed(database, removed_paths.places_of({doc["_id"]: doc for doc in kept}))
    assert await queue_removed(database) == 30
    # `again`'s paths freed meanwhile (another reaper's work), and new files registered there.
    ses = {se.name: se for se in await list_storage_elements(database)}
    assert len((await delete_removed_paths(database, [("A", lfn) for lfn in again], ses,
                                                settings.storage_credentials)).deleted) == 5
    new = {lfn: write_bytes(a, lfn, b"new file at " + lfn.encode()) for lfn in again}
    assert len((await register_files(database, ADMIN, _rows(again, "A")))["successful"]) == 5
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    assert not any(_at(a, lfn).exists() for lfn in gone)
    assert all(path.read_bytes() == b"new file at " + lfn.encode() for lfn, path in new.items())
    assert all(_at(a, lfn).exists() for lfn in stayed)
    assert await _holds(database) == 0  # `stayed`'s taken back, the others released
    assert await database[rq.REQUESTS].count_documents({"requester": REQUESTER, "state": {"$ne": "done"}}) == 0
    assert sorted(await database["files"].distinct("_id")) == sorted(again + stayed)


async def test_in_a_batch_a_path_whose_removal_is_at_work_waits_and_the_others_go(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    gone, busy = [f"/vo/busy/gone{i}" for i in range(10)], ["/vo/busy/f0", "/vo/busy/f1"]
    await _force_removed(database, [a], gone)
    await put_files(database, [a], busy, size=16)
    # A removal at work on `busy`: marked, its paths held, its records not deleted yet.
    claim = await claim_removals(database, busy, {"guid": 1, "replicas": 1}, force=True)
    await removed_paths.hold_removed(database, removed_paths.places_of(claim.records))
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    assert not any(_at(a, lfn).exists() for lfn in gone)
    assert all(_at(a, lfn).exists() for lfn in busy)
    waiting = await database[rq.REQUESTS].find({"requester": REQUESTER, "state": "queued"}).to_list()
    assert sorted(r["lfn"] for r in waiting) == busy
    soonest = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=WAIT_S - 5)
    assert all(r["not_before"].replace(tzinfo=dt.UTC) > soonest for r in waiting)
    assert await _holds(database) == 2  # still refused to registrations


def _frozen_reaper(settings: Settings, stalled: threading.Event, thaw: threading.Event,
                   at: CodeType = deletion.delete_bytes.__code__) -> None:
    """One reaper cycle in a thread of its own, frozen at the first call of `at` (by default
    where it is about to delete bytes)."""
    async def cycle() -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
        try:
            await Reaper(settings, client[settings.database]).run(max_cycles=1)
        finally:
            await client.close()

    sys.setprofile(freeze_at_first_call(at, stalled, thaw))
    try:
        asyncio.run(cycle())
    finally:
        sys.setprofile(None)


async def test_a_reaper_whose_lease_lapsed_before_the_storage_call_deletes_nothing_of_its_batch(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    quick = fast_settings(settings, lease_s=LEASE_S)
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    lfns = [f"/vo/lapsed/f{i:02d}" for i in range(30)]
    await _force_removed(database, [a], lfns)
    stalled, thaw = threading.Event(), threading.Event()
    thread = threading.Thread(target=_frozen_reaper, args=(quick, stalled, thaw))
    thread.start()
    try:
        assert await asyncio.to_thread(stalled.wait, 30), "the reaper never reached the deletion"
        await asyncio.sleep(LEASE_S * 1.5)  # its leases run out while it is frozen
    finally:
        thaw.set()
        await asyncio.to_thread(thread.join, 30)
    assert len(_stored(a)) == 30 and await _holds(database) == 30  # nothing deleted, nothing released
    reaper = Reaper(quick, database)
    for _ in range(40):  # once its leases are over, another reaper deletes them all
        await reaper.run(max_cycles=1)
        if not _stored(a):
            break
        await asyncio.sleep(0.1)
    assert _stored(a) == [] and await _holds(database) == 0


async def test_a_reaper_stalled_amid_its_batchs_deletions_deletes_no_more_when_it_resumes(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    """The lease is checked before each storage call, not once a batch: a stall amid a long batch
    (a slow SE) leaves the rest of it to the successor."""
    quick = fast_settings(settings, lease_s=LEASE_S)
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    lfns = [f"/vo/amid/f{i:02d}" for i in range(30)]
    await _force_removed(database, [a], lfns)
    stalled, thaw = threading.Event(), threading.Event()
    thread = threading.Thread(target=_frozen_reaper, args=(quick, stalled, thaw, PosixPlugin.delete.__code__))
    thread.start()
    try:
        assert await asyncio.to_thread(stalled.wait, 30), "the reaper never reached a deletion"
        await asyncio.sleep(LEASE_S * 1.5)  # its leases run out while it is frozen in its first deletion
    finally:
        thaw.set()
        await asyncio.to_thread(thread.join, 30)
    assert len(_stored(a)) >= 29  # the one under way when it stalled at most (before: all 30)
    assert await _holds(database) == 30  # none released: a successor deletes (again) and releases them
