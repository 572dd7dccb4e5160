"""A file move whose server dies half-way is finished or taken back by the next transfer
worker's sweep (`catalogue.move_counts`): killed after its copy landed and before the original
went, the copy is taken back and the file can be moved again at once; killed after the original
went and before the count, the move is counted once. Each is checked by a recount and on the
records themselves."""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import AbstractContextManager

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import file_move, guid_holds, move_counts, usage_claims
from catalogue.collection_names import FILES
from catalogue.files import register_files
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.usage import REMOVING, USAGE_CLAIMS, rebuild
from kernel.db import Document
from kernel.errors import Conflict, ServiceUnavailable
from kernel.marks import Mark
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import stalled_call
from tests.fixtures.usage_cuts import (
    STALE_S,
    Killed,
    killed_at_first_count,
    killed_without_clean_up,
    next_worker_sweeps,
    no_drift_nor_claim,
)

SOURCE, DESTINATION = "/vo/from/f", "/vo/to/f"


def killed_before_delete(monkeypatch: pytest.MonkeyPatch) -> AbstractContextManager[None]:
    """The move's delete of its original raises Killed before it is sent, and nothing of the
    call's own clean-up runs (a killed process runs none): its copy and its mark stay."""
    return killed_without_clean_up(monkeypatch, Mark.delete.__code__, (file_move, "_take_back"), (Mark, "take_off"),
                                   (move_counts, "give_up"))


async def _registered(db: AsyncDatabase[Document]) -> str:
    outcome = await register_files(db, ADMIN, [{"lfn": SOURCE, "size": 100, "adler32": "00000001",
                                               "replicas": [{"se": "CERN-DISK"}]}])
    assert list(outcome["successful"]) == [SOURCE]
    await mkdir(db, ADMIN, "/vo/to", parents=True)
    doc = await db[FILES].find_one({"_id": SOURCE})
    assert doc is not None
    return str(doc["guid"])


async def _no_drift(db: AsyncDatabase[Document]) -> None:
    await no_drift_nor_claim(db, move_counts.KIND)


async def _placed_by_the_sweep(db: AsyncDatabase[Document], settings: Settings, guid: str) -> None:
    """After the next worker's sweep: the copy is the file, with its GUID, counted once."""
    await next_worker_sweeps(db, settings)
    moved = await db[FILES].find_one({"_id": DESTINATION})
    assert moved is not None and moved.get("guid") == guid and "moving_guid" not in moved
    await _no_drift(db)


async def test_a_move_killed_after_deleting_its_original_is_counted_once_by_the_sweep(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    guid = await _registered(catalogue_db)
    with killed_at_first_count(), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    assert await catalogue_db[FILES].find_one({"_id": SOURCE}) is None
    await _placed_by_the_sweep(catalogue_db, settings, guid)


async def test_a_move_killed_before_deleting_its_original_is_taken_back_by_the_sweep(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the copy stayed at the destination beside the original for good (the file at two
    LFNs, the destination taken), and the original stayed marked until its lease ended."""
    guid = await _registered(catalogue_db)
    with killed_before_delete(monkeypatch), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    assert await catalogue_db[FILES].find_one({"_id": DESTINATION}) is not None
    await next_worker_sweeps(catalogue_db, settings)
    assert await catalogue_db[FILES].find_one({"_id": DESTINATION}) is None
    original = await catalogue_db[FILES].find_one({"_id": SOURCE})
    assert original is not None and original.get("guid") == guid and REMOVING not in original
    await _no_drift(catalogue_db)
    await move(catalogue_db, ADMIN, SOURCE, DESTINATION)  # at once: its mark went with the copy
    assert await catalogue_db[FILES].find_one({"_id": DESTINATION}) is not None
    await _no_drift(catalogue_db)


async def test_a_move_stalled_before_its_count_counts_nothing_after_the_sweep_did(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    """Frozen (its own thread, client and loop: another process) with its original deleted and
    its count about to be sent; the sweep counts the move; thawed, the call counts nothing."""
    await _registered(catalogue_db)
    async with stalled_call(settings, lambda db: move(db, ADMIN, SOURCE, DESTINATION),
                            usage_claims.settle.__code__) as outcome:
        await asyncio.sleep(STALE_S)
        assert await move_counts.settle_stale(catalogue_db, STALE_S) == 1
        assert (await rebuild(catalogue_db, fix=False))["drifted"] == 0
    assert outcome["result"]["path"] == DESTINATION
    await _no_drift(catalogue_db)


async def test_a_move_that_gave_up_leaves_no_claim(
    catalogue_db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A move refused after its claim (the original kept changing) settles it counting nothing."""
    await _registered(catalogue_db)
    monkeypatch.setattr(file_move, "MOVE_ROUNDS", 0)
    with pytest.raises(Exception, match="kept changing"):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    assert await catalogue_db[FILES].find_one({"_id": DESTINATION}) is None
    await _no_drift(catalogue_db)


async def test_a_claim_swept_after_its_marks_lease_takes_back_its_copy_and_counts_nothing(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Swept only once another call could have taken the original over: the copy beside the
    original still goes (it is this call's, by its token), and nothing is counted."""
    lease = dt.timedelta(seconds=2)
    monkeypatch.setattr(file_move, "REMOVAL_LEASE", lease)
    monkeypatch.setattr(move_counts, "REMOVAL_LEASE", lease)
    monkeypatch.setattr(move_counts, "TAKEOVER_MARGIN", dt.timedelta(seconds=0.5))
    await _registered(catalogue_db)
    with killed_before_delete(monkeypatch), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    await asyncio.sleep(lease.total_seconds() + 0.1)
    await next_worker_sweeps(catalogue_db, settings)
    assert await catalogue_db[FILES].find_one({"_id": DESTINATION}) is None
    assert await catalogue_db[FILES].find_one({"_id": SOURCE}) is not None
    await _no_drift(catalogue_db)


async def test_a_move_stalled_before_deleting_its_original_deletes_nothing_after_the_sweep_took_it_back(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    """Frozen with its copy in and its delete about to be sent; the sweep takes the copy and the
    mark back; thawed, the call finds its mark gone, deletes nothing and says so."""
    guid = await _registered(catalogue_db)
    async def refused(db: AsyncDatabase[Document]) -> Conflict | None:
        try:
            await move(db, ADMIN, SOURCE, DESTINATION)
        except Conflict as exc:
            return exc
        return None

    async with stalled_call(settings, refused, Mark.delete.__code__, "move") as outcome:
        await asyncio.sleep(STALE_S)
        assert await move_counts.settle_stale(catalogue_db, STALE_S) == 1
    assert "moved or removed by another request" in str(outcome["result"])
    assert await catalogue_db[FILES].find_one({"_id": DESTINATION}) is None
    original = await catalogue_db[FILES].find_one({"_id": SOURCE})
    assert original is not None and original.get("guid") == guid
    await _no_drift(catalogue_db)


async def test_a_move_whose_database_fails_after_deleting_its_original_keeps_its_copy(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the call, failing while it gave its copy the GUID back, took the copy back too
    (it still carried `moving_guid`): the original deleted, the file was gone from the catalogue."""
    guid = await _registered(catalogue_db)

    async def database_gone(*args: object, **kwargs: object) -> None:
        raise ServiceUnavailable("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(guid_holds, "restore", database_gone)
        with pytest.raises(ServiceUnavailable):
            await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    assert await catalogue_db[FILES].find_one({"_id": DESTINATION}) is not None
    await _placed_by_the_sweep(catalogue_db, settings, guid)


async def test_a_usage_rebuild_takes_back_a_dead_moves_copy_before_it_counts(
    database: AsyncDatabase[Document], api: RunningApi, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the rebuild counted the copy beside its original and dropped the claim, so no
    sweep would ever take the copy back (the file at two LFNs for good)."""
    async with api.client() as client:
        await client.register_files([{"lfn": SOURCE, "size": 100, "adler32": "00000001"}])
        await client.mkdir("/vo/to", parents=True)
    with killed_before_delete(monkeypatch), pytest.raises(Killed):
        await move(database, ADMIN, SOURCE, DESTINATION)
    await database[USAGE_CLAIMS].update_many({"kind": move_counts.KIND},  # as old as the sweep's wait
                                              {"$set": {"pending": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)}})
    async with api.client() as client:
        await client.rebuild_usage(fix=True)
    assert await database[FILES].find_one({"_id": DESTINATION}) is None
    assert await database[FILES].find_one({"_id": SOURCE}) is not None
    await _no_drift(database)


async def test_a_file_registered_at_the_source_since_is_not_taken_for_the_original(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    """Killed once the original went; another file registered at the old LFN meanwhile: the sweep
    places the copy (the moved file) and counts the move, the new file stays."""
    guid = await _registered(catalogue_db)
    with killed_at_first_count(), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    again = await register_files(catalogue_db, ADMIN, [{"lfn": SOURCE, "size": 7, "adler32": "00000002"}])
    assert list(again["successful"]) == [SOURCE]
    await next_worker_sweeps(catalogue_db, settings)
    moved = await catalogue_db[FILES].find_one({"_id": DESTINATION})
    assert moved is not None and moved.get("guid") == guid and "move_call" not in moved
    newer = await catalogue_db[FILES].find_one({"_id": SOURCE})
    assert newer is not None and newer["guid"] != guid and newer["size"] == 7
    await _no_drift(catalogue_db)
