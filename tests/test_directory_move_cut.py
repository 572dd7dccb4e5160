"""A directory move whose server dies half-way is finished (or, before its destination stood,
taken back) by the transfer workers' sweep once its marks' lease is out
(`catalogue.directory_move_repair`); until then both trees refuse every writer. Each kill point
is checked on the records themselves and by a recount.

Before: the tree stayed split between the two places for good (the destination taken, so every
`cairn mv` again answered "exists already"), with the old place's ancestors counting all of it,
and a registration into the half-filled destination was accepted (its count then overwritten by
the move's re-keyed usage)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
from contextlib import AbstractContextManager
from pathlib import Path
from types import CodeType

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port
from cairn.sdk import Client
from catalogue import directory_move_plan, directory_move_repair, guid_holds, moves
from catalogue.collection_names import FILES
from catalogue.directories import DIRECTORIES
from catalogue.files import register_files
from catalogue.metadata import set_metadata
from catalogue.moves import move
from catalogue.namespace import mkdir, remove
from catalogue.usage import COPY_CALL, MOVING, USAGE_CLAIMS, directory_usage
from kernel.db import Document
from kernel.errors import Conflict, ServiceUnavailable
from kernel.marks import Mark
from kernel.process import stop_processes
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.api_process import start_api_process
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.usage_cuts import Killed, killed_without_clean_up, next_worker_sweeps, no_drift_nor_claim

SOURCE, DESTINATION = "/vo/from", "/vo/to"
LFNS = [f"{SOURCE}/top{i}" for i in range(2)] + [f"{SOURCE}/a/f{i}" for i in range(4)] + [
    f"{SOURCE}/b/c/g{i}" for i in range(4)]
SIZE = 100
BIG = 5000  # files of the tree a killed server was moving


async def _tree(db: AsyncDatabase[Document]) -> dict[str, str]:
    """Ten files in four directories, `run` set on /vo/from/b; their GUIDs by path below the tree."""
    outcome = await register_files(db, ADMIN, [{"lfn": lfn, "size": SIZE, "adler32": "00000001",
                                                "replicas": [{"se": "CERN-DISK"}]} for lfn in LFNS])
    assert sorted(outcome["successful"]) == sorted(LFNS)
    await set_metadata(db, ADMIN, f"{SOURCE}/b", {"run": 7})
    return {lfn[len(SOURCE):]: str(info["guid"]) for lfn, info in outcome["successful"].items()}


def _killed_at(monkeypatch: pytest.MonkeyPatch, code: CodeType, nth: int) -> AbstractContextManager[None]:
    """Killed at the `nth` call of `code`, none of the call's clean-up run (its marks and holds stay)."""
    return killed_without_clean_up(monkeypatch, code, (guid_holds, "release"), (Mark, "take_off"), nth=nth)


async def _lease_out(db: AsyncDatabase[Document]) -> None:
    """The marks' lease ran out (no call renews them)."""
    past = dt.datetime.now(dt.UTC) - moves.MOVE_LEASE - dt.timedelta(seconds=1)
    await db[DIRECTORIES].update_many({MOVING: {"$exists": True}}, {"$set": {f"{MOVING}.at": past}})


async def _moved_whole(db: AsyncDatabase[Document], guids: dict[str, str]) -> None:
    assert [d["_id"] async for d in db[DIRECTORIES].find({"_id": {"$regex": f"^{SOURCE}(/|$)"}})] == []
    assert [d["_id"] async for d in db[FILES].find({"_id": {"$regex": f"^{SOURCE}/"}})] == []
    files = {d["_id"]: d async for d in db[FILES].find({"_id": {"$regex": f"^{DESTINATION}/"}})}
    assert {lfn[len(DESTINATION):]: d.get("guid") for lfn, d in files.items()} == guids
    for doc in [*files.values(), *[d async for d in db[DIRECTORIES].find({"_id": {"$regex": f"^{DESTINATION}"}})]]:
        assert not {"moving_guid", COPY_CALL, MOVING} & set(doc), doc["_id"]
    assert files[f"{DESTINATION}/b/c/g0"]["meta_effective"] == {"run": 7}
    assert await directory_usage(db, DESTINATION) == {"path": DESTINATION, "files": len(LFNS),
                                                       "bytes": len(LFNS) * SIZE}
    assert await directory_usage(db, SOURCE) == {"path": SOURCE, "files": 0, "bytes": 0}


async def _no_drift(db: AsyncDatabase[Document]) -> None:
    await no_drift_nor_claim(db, directory_move_plan.KIND)


# Where the call dies: a batch's copies in and its originals not yet dropped; a batch's originals
# dropped and its copies not yet given their GUIDs; the tree moved and its usage not; its source's
# record deleted and its count not settled.
KILL_POINTS = {
    "copies in, originals there": (moves._drop_originals.__code__, 3),
    "originals gone, GUIDs not back": (guid_holds.restore.__code__, 3),
    "tree moved, usage not": (directory_move_plan.move_usage.__code__, 1),
    "source gone, count not settled": (directory_move_plan.settle.__code__, 1),
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
async def test_a_directory_move_killed_half_way_is_finished_once_by_the_sweep(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch, point: str,
) -> None:
    guids = await _tree(catalogue_db)
    await mkdir(catalogue_db, ADMIN, "/vo/else")
    monkeypatch.setattr(moves, "MOVE_BATCH", 3)
    code, nth = KILL_POINTS[point]
    with _killed_at(monkeypatch, code, nth), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    if point != "source gone, count not settled":  # both trees refuse every writer until the sweep
        with pytest.raises(Conflict, match="being moved"):
            await move(catalogue_db, ADMIN, SOURCE, "/vo/again")
        refused = await register_files(catalogue_db, ADMIN, [{"lfn": f"{DESTINATION}/new", "size": 1,
                                                               "adler32": "00000001"}])
        assert "being moved" in refused["failed"][f"{DESTINATION}/new"]
        with pytest.raises(Conflict):
            await mkdir(catalogue_db, ADMIN, f"{DESTINATION}/new")
        with pytest.raises(Conflict, match="being moved"):
            await remove(catalogue_db, ADMIN, DESTINATION, recursive=True)
        with pytest.raises(Conflict, match="being moved"):
            await move(catalogue_db, ADMIN, "/vo", "/vo2")  # a tree holding a move under way
        with pytest.raises(Conflict, match="being moved"):
            await remove(catalogue_db, ADMIN, "/vo", recursive=True)
        await next_worker_sweeps(catalogue_db, settings)  # within the lease: the call may be alive
        assert await catalogue_db[DIRECTORIES].find_one({"_id": SOURCE}) is not None
        await _lease_out(catalogue_db)
    await next_worker_sweeps(catalogue_db, settings)
    await _moved_whole(catalogue_db, guids)
    assert await directory_usage(catalogue_db, "/vo") == {"path": "/vo", "files": len(LFNS), "bytes": len(LFNS) * SIZE}
    await _no_drift(catalogue_db)
    await move(catalogue_db, ADMIN, DESTINATION, SOURCE)  # free again: it moves back whole
    assert await directory_usage(catalogue_db, SOURCE) == {"path": SOURCE, "files": len(LFNS),
                                                            "bytes": len(LFNS) * SIZE}
    await _no_drift(catalogue_db)


@pytest.mark.parametrize("point", ["claimed, its mark not naming it", "destination in, not placed"])
async def test_a_directory_move_killed_before_its_destination_stood_is_taken_back(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch, point: str,
) -> None:
    guids = await _tree(catalogue_db)
    code = directory_move_plan.name_call if point.startswith("claimed") else directory_move_plan.placed
    with _killed_at(monkeypatch, code.__code__, 1), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    stood = await catalogue_db[DIRECTORIES].find_one({"_id": DESTINATION}) is not None
    assert stood == (point == "destination in, not placed")
    await _lease_out(catalogue_db)
    await next_worker_sweeps(catalogue_db, settings)
    assert await catalogue_db[DIRECTORIES].find_one({"_id": DESTINATION}) is None
    source = await catalogue_db[DIRECTORIES].find_one({"_id": SOURCE})
    assert source is not None and MOVING not in source
    assert {d["_id"][len(SOURCE):]: d["guid"] async for d in catalogue_db[FILES].find({})} == guids
    await _no_drift(catalogue_db)
    await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    await _moved_whole(catalogue_db, guids)
    await _no_drift(catalogue_db)


async def test_a_slow_move_whose_marks_the_sweep_took_over_stops_at_its_next_batch(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The call's mark, as it holds it, no longer renews once the sweep took it over."""
    guids = await _tree(catalogue_db)
    monkeypatch.setattr(moves, "MOVE_BATCH", 3)
    with _killed_at(monkeypatch, moves._drop_originals.__code__, 3), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION)
    source = await catalogue_db[DIRECTORIES].find_one({"_id": SOURCE})
    assert source is not None
    slow = Mark(MOVING, moves.MOVE_LEASE, token=source[MOVING]["token"])
    await _lease_out(catalogue_db)
    await next_worker_sweeps(catalogue_db, settings)
    await _moved_whole(catalogue_db, guids)
    with pytest.raises(ServiceUnavailable, match="taken over"):
        await directory_move_plan.renew(catalogue_db, slow, SOURCE, DESTINATION)


async def test_a_usage_rebuild_waits_for_a_directory_move_under_way(
    database: AsyncDatabase[Document], api: RunningApi, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the rebuild recounted a half-moved tree and dropped the move's claim; the move's
    own count then moved the tree's totals a second time."""
    async with api.client() as client:
        await client.register_files([{"lfn": lfn, "size": SIZE, "adler32": "00000001"} for lfn in LFNS])
    monkeypatch.setattr(moves, "MOVE_BATCH", 3)
    with _killed_at(monkeypatch, moves._drop_originals.__code__, 3), pytest.raises(Killed):
        await move(database, ADMIN, SOURCE, DESTINATION)
    async with api.client() as client:
        with pytest.raises(Conflict, match="directory move"):
            await client.rebuild_usage(fix=True)
    assert await directory_move_repair.under_way(database) == [SOURCE]
    await _lease_out(database)
    await database[USAGE_CLAIMS].update_many({"kind": directory_move_plan.KIND},  # as old as the sweep's wait
                                              {"$set": {"pending": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)}})
    async with api.client() as client:
        await client.rebuild_usage(fix=True)  # the dead move finished first
    assert await database[FILES].count_documents({"_id": {"$regex": f"^{DESTINATION}/"}}) == len(LFNS)
    await _no_drift(database)


async def test_a_directory_move_whose_server_was_sigkilled_half_way_is_finished_by_the_sweep(
    api: RunningApi, settings: Settings, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """End to end: `cairn server` in a process of its own is SIGKILLed while it moves a tree of
    BIG files (in batches of 1000), once the first of them reached the new place; a transfer
    worker started after the marks' lease finishes the move; the tree then moves back whole."""
    lfns = [f"/vo/big/d{i % 20}/f{i}" for i in range(BIG)]
    async with api.client() as client:
        for start in range(0, BIG, 1000):
            await client.register_files([{"lfn": lfn, "size": SIZE, "adler32": "00000001"}
                                         for lfn in lfns[start:start + 1000]])
    port = free_port()
    server = await asyncio.to_thread(start_api_process, settings, port, tmp_path / "server.log")
    try:
        async with Client(f"http://127.0.0.1:{port}", api.admin_token, ride_out_s=0) as client:
            moving = asyncio.ensure_future(client.move("/vo/big", "/vo/moved"))
            deadline = time.monotonic() + 60
            while not await database[FILES].find_one({"_id": {"$regex": "^/vo/moved/"}}, {"_id": 1}):
                assert time.monotonic() < deadline and not moving.done()
                await asyncio.sleep(0.005)
            os.kill(server.pid, signal.SIGKILL)
            await asyncio.to_thread(server.wait)
            with pytest.raises(ServiceUnavailable):
                await moving
    finally:
        stop_processes([server], timeout_s=15)
    assert await database[FILES].count_documents({"_id": {"$regex": "^/vo/big/"}}) > 0  # cut half-way
    await _lease_out(database)
    await next_worker_sweeps(database, settings)
    assert await database[FILES].count_documents({"_id": {"$regex": "^/vo/big/"}}) == 0
    assert await database[FILES].count_documents({"_id": {"$regex": "^/vo/moved/"}, "guid": {"$exists": True},
                                                  "moving_guid": {"$exists": False}}) == BIG
    assert await database[DIRECTORIES].find_one({"_id": "/vo/big"}) is None
    assert await directory_usage(database, "/vo/moved") == {"path": "/vo/moved", "files": BIG, "bytes": BIG * SIZE}
    await _no_drift(database)
    async with api.client() as client:
        await client.move("/vo/moved", "/vo/big")
        assert (await client.directory_usage("/vo/big"))["files"] == BIG
    await _no_drift(database)


async def test_a_named_move_cut_short_and_sent_again_waits_for_the_sweep_then_answers_it(
    catalogue_db: AsyncDatabase[Document], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent again while its first sending's tree is still being finished: 503 (the SDK waits);
    once the sweep finished it: answered the tree at its new place, moved once."""
    guids = await _tree(catalogue_db)
    monkeypatch.setattr(moves, "MOVE_BATCH", 3)
    with _killed_at(monkeypatch, moves._drop_originals.__code__, 3), pytest.raises(Killed):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION, request_id="nightly-move-1")
    with pytest.raises(ServiceUnavailable, match="being finished"):
        await move(catalogue_db, ADMIN, SOURCE, DESTINATION, request_id="nightly-move-1")
    await _lease_out(catalogue_db)
    await next_worker_sweeps(catalogue_db, settings)
    answered = await move(catalogue_db, ADMIN, SOURCE, DESTINATION, request_id="nightly-move-1")
    assert answered["path"] == DESTINATION and answered["type"] == "directory"
    await _moved_whole(catalogue_db, guids)
    await _no_drift(catalogue_db)
