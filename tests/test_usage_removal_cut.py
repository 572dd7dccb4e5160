"""A file removal whose server dies between deleting its records and taking them off the
counters is counted off exactly once all the same: the next transfer worker's sweep settles the
count the call claimed before its deletes (`catalogue.removal_counts`). A call killed before its
deletes leaves its files, and the sweep counts nothing off. Each is checked by a recount."""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import AbstractContextManager

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import file_removal, removal_counts, usage_claims
from catalogue.collection_names import FILES
from catalogue.files import register_files, remove_files
from catalogue.usage import rebuild
from kernel.db import Document
from kernel.errors import ServiceUnavailable
from kernel.marks import Mark
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import stalled_call
from tests.fixtures.usage_cuts import (
    STALE_S,
    Killed,
    killed_at_first_call,
    killed_at_first_count,
    killed_without_clean_up,
    next_worker_sweeps,
    no_drift_nor_claim,
)

LFNS = [f"/vo/open/f{i}" for i in range(3)]


def killed_before_delete() -> AbstractContextManager[None]:
    """The removal's first delete raises Killed before it is sent: marked and claimed, nothing deleted."""
    return killed_at_first_call(Mark.delete.__code__)


async def _registered(db: AsyncDatabase[Document]) -> None:
    outcome = await register_files(db, ADMIN, [{"lfn": lfn, "size": 100, "adler32": "00000001",
                                               "replicas": [{"se": "CERN-DISK"}]} for lfn in LFNS])
    assert sorted(outcome["successful"]) == LFNS


async def test_files_removed_by_a_server_killed_before_counting_them_off_are_counted_off_by_the_sweep(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    await _registered(catalogue_db)
    with killed_at_first_count(), pytest.raises(Killed):
        await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    assert await catalogue_db[FILES].count_documents({}) == 0
    await next_worker_sweeps(catalogue_db, settings)
    report = await rebuild(catalogue_db, fix=False)
    assert report["drifted"] == 0, report["drift"]



async def test_a_removal_killed_before_its_deletes_leaves_its_files_and_the_sweep_counts_nothing_off(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    await _registered(catalogue_db)
    with killed_before_delete(), pytest.raises(Killed):
        await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    assert await catalogue_db[FILES].count_documents({}) == len(LFNS)
    await next_worker_sweeps(catalogue_db, settings)
    await no_drift_nor_claim(catalogue_db, removal_counts.KIND)


async def test_a_removal_stalled_before_counting_counts_nothing_off_after_the_sweep_did(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    """Frozen (in its own thread, client and loop: another process) with its records deleted
    and their count about to be sent; the sweep counts them off; thawed, it counts nothing."""
    await _registered(catalogue_db)
    async with stalled_call(settings, lambda db: remove_files(db, ADMIN, LFNS, force=True),
                            usage_claims.settle.__code__) as outcome:
        await asyncio.sleep(STALE_S)
        assert await removal_counts.settle_stale(catalogue_db, STALE_S) == 1
        assert (await rebuild(catalogue_db, fix=False))["drifted"] == 0
    assert outcome["result"]["failed"] == {}
    report = await rebuild(catalogue_db, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def test_a_claim_swept_after_its_marks_lease_counts_nothing_off_that_a_taker_counted(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A removal killed before its deletes; its marks lapse and another removal takes its files
    over, deletes them and counts them off; a sweep reaching the dead call's claim only now finds
    their GUIDs gone, and would count them off a second time."""
    lease = dt.timedelta(seconds=2)
    monkeypatch.setattr(file_removal, "REMOVAL_LEASE", lease)
    monkeypatch.setattr(removal_counts, "REMOVAL_LEASE", lease)
    monkeypatch.setattr(removal_counts, "TAKEOVER_MARGIN", dt.timedelta(seconds=0.5))
    await _registered(catalogue_db)
    with killed_before_delete(), pytest.raises(Killed):
        await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    await asyncio.sleep(lease.total_seconds() + 0.1)  # its marks lapse
    taken = await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    assert (taken["failed"], await catalogue_db[FILES].count_documents({})) == ({}, 0)
    await next_worker_sweeps(catalogue_db, settings)
    await no_drift_nor_claim(catalogue_db, removal_counts.KIND)


async def test_a_removal_of_more_files_than_a_batch_counts_each_off_once(
    catalogue_db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Removals go BATCH records at a time, each batch with its own claim (a claim holds its
    records as read: 100,000 in one would pass the database's document size)."""
    monkeypatch.setattr(file_removal, "BATCH", 4)
    lfns = [f"/vo/many/f{i:02d}" for i in range(10)]
    outcome = await register_files(catalogue_db, ADMIN, [{"lfn": lfn, "size": 100, "adler32": "00000001",
                                                         "replicas": [{"se": "CERN-DISK"}]} for lfn in lfns])
    assert sorted(outcome["successful"]) == lfns
    removed = await remove_files(catalogue_db, ADMIN, [*lfns, *lfns[:3]], force=True)
    assert (removed["failed"], sorted(removed["successful"])) == ({}, lfns)
    assert await catalogue_db[FILES].count_documents({}) == 0
    report = await rebuild(catalogue_db, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def test_a_removal_failing_half_way_counts_its_own_deletes_before_a_retry_takes_the_rest(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database fails after the removal deleted some of its records: the call lets its other
    records go at once for a retry, which removes and counts them. Before, its claim was left to
    the sweep, which counted every planned record whose GUID was gone: the retry's too, twice."""
    await _registered(catalogue_db)
    deleting = file_removal._delete_as_read

    async def half_then_gone(db: AsyncDatabase[Document], mark: Mark, records: dict[str, Document]) -> int:
        first = dict(sorted(records.items())[:1])
        await deleting(db, mark, first)
        raise ServiceUnavailable("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(file_removal, "_delete_as_read", half_then_gone)
        with pytest.raises(ServiceUnavailable):
            await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    assert await catalogue_db[FILES].count_documents({}) == len(LFNS) - 1
    again = await remove_files(catalogue_db, ADMIN, LFNS[1:], force=True)  # at once: the marks went
    assert (again["failed"], sorted(again["successful"])) == ({}, LFNS[1:])
    await next_worker_sweeps(catalogue_db, settings)
    await no_drift_nor_claim(catalogue_db, removal_counts.KIND)


async def test_the_sweep_frees_the_files_of_a_removal_killed_before_its_deletes(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed with its files marked and nothing deleted (none of its clean-up run): once the sweep
    settled its claim past half the marks' lease, a retry removes them at once. Before, the retry
    was refused "try again" until the marks' lease ran out."""
    lease = dt.timedelta(seconds=4)
    monkeypatch.setattr(file_removal, "REMOVAL_LEASE", lease)
    monkeypatch.setattr(removal_counts, "REMOVAL_LEASE", lease)
    monkeypatch.setattr(removal_counts, "TAKEOVER_MARGIN", dt.timedelta(seconds=0.5))
    await _registered(catalogue_db)

    with killed_without_clean_up(monkeypatch, Mark.delete.__code__, (file_removal, "release"),
                                 (removal_counts, "give_up")), pytest.raises(Killed):
        await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    await asyncio.sleep(lease.total_seconds() / 2)  # the marks past half their lease, well inside it
    await next_worker_sweeps(catalogue_db, settings)
    again = await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    assert (again["failed"], sorted(again["successful"])) == ({}, LFNS)
    assert all(v["removed"] for v in again["successful"].values())
    report = await rebuild(catalogue_db, fix=False)
    assert report["drifted"] == 0, report["drift"]
