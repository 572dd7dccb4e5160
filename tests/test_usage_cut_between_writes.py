"""A replica add or pull whose process dies between its file write and its SE usage write is
counted exactly once all the same: the next transfer worker's sweep finishes the count
(`catalogue.usage_entries`). A process that only stalled there and resumes after the sweep
counted for it counts nothing more. Each is checked by a recount (`usage rebuild --dry-run`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import moves, usage_entries
from catalogue.collection_names import FILES
from catalogue.files import fetch_files
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.replicas import add_replicas
from catalogue.storage_elements import StorageElement
from catalogue.usage import USAGE, USAGE_ENTRIES, USAGE_PENDING, rebuild, se_usage
from kernel import db as kernel_db
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import freeze_at_first_call
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files
from transfers.destination import discard_many, register_copying_many
from transfers.worker import TransferWorker

SIZE = 100
LFNS = [f"/vo/cut/f{i}" for i in range(3)]


class Killed(Exception):
    """Stands in for SIGKILL: raised where the process would have died, nothing after it runs."""


@contextmanager
def killed_at_first_usage_write() -> Iterator[None]:
    """The first bulk write to the usage collection after one to the files raises Killed before
    it is sent: the file records were written, the counters not (what a kill between the two
    leaves)."""
    wrote: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or frame.f_code is not kernel_db.bulk_write_chunked.__code__:
            return
        wrote.append(getattr(frame.f_locals.get("collection"), "name", ""))
        if wrote[-1] == USAGE and FILES in wrote:
            sys.setprofile(None)
            raise Killed

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)


async def _two_ses(database: AsyncDatabase[Document], tmp_path: Path) -> tuple[StorageElement, StorageElement]:
    src, dest = disk_se("SRC", tmp_path / "src"), disk_se("DEST", tmp_path / "dest")
    await add_ses(database, src, dest)
    await put_files(database, [src], LFNS, size=SIZE)
    return src, dest


async def _copying(db: AsyncDatabase[Document], dest: StorageElement) -> dict[tuple[str, str], str]:
    docs = await fetch_files(db, LFNS, {"replicas": 1, "version": 1, "guid": 1, "size": 1})
    return await register_copying_many(db, [(docs[lfn], dest) for lfn in LFNS])


async def _next_worker_sweeps(database: AsyncDatabase[Document], settings: Settings) -> None:
    """A transfer worker started after the kill: its first turn sweeps (counts left older than
    `usage_entries.STALE_S` are its)."""
    await asyncio.sleep(usage_entries.STALE_S)
    worker = TransferWorker(fast_settings(settings), database)
    try:
        await worker.run_once()
    finally:
        await worker.close()


async def _exact(db: AsyncDatabase[Document], dest_replicas: int) -> None:
    usage = {row["se"]: (row["replicas"], row["bytes"]) for row in await se_usage(db)}
    assert usage["SRC"] == (len(LFNS), len(LFNS) * SIZE)
    assert usage.get("DEST", (0, 0)) == (dest_replicas, dest_replicas * SIZE)
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def test_copying_replicas_whose_worker_died_before_counting_them_are_counted_by_the_next(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    _, dest = await _two_ses(database, tmp_path)
    with killed_at_first_usage_write(), pytest.raises(Killed):
        await _copying(database, dest)
    assert [r["se"] for f in (await fetch_files(database, LFNS, {"replicas": 1})).values()
            for r in f["replicas"]] == ["SRC", "DEST"] * 3
    await _next_worker_sweeps(database, settings)
    await _exact(database, 3)
    assert await database["files"].count_documents({f"{USAGE_ENTRIES}.0": {"$exists": True}}) == 0


async def test_copying_replicas_discarded_by_a_worker_that_died_before_counting_are_counted_off_by_the_next(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    _, dest = await _two_ses(database, tmp_path)
    assert set((await _copying(database, dest)).values()) == {"copying"}
    with killed_at_first_usage_write(), pytest.raises(Killed):
        await discard_many(database, [(lfn, "DEST", None) for lfn in LFNS])
    await _next_worker_sweeps(database, settings)
    await _exact(database, 0)


async def test_a_worker_stalled_before_counting_counts_nothing_after_the_sweep_counted_for_it(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """Frozen (in its own thread, client and loop: another process) with its replicas written
    and their count about to be sent; the sweep counts them; thawed, its count is refused (the
    successors' fence) and it finds its entries gone."""
    _, dest = await _two_ses(database, tmp_path)
    stalled, thaw = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def stalled_worker() -> None:
        async def push() -> dict[tuple[str, str], str]:
            client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
            try:
                return await _copying(client[settings.database], dest)
            finally:
                await client.close()

        sys.setprofile(freeze_at_first_call(usage_entries._apply.__code__, stalled, thaw))
        try:
            outcome["statuses"] = asyncio.run(push())
        finally:
            sys.setprofile(None)

    thread = threading.Thread(target=stalled_worker)
    thread.start()
    try:
        assert await asyncio.to_thread(stalled.wait, 30), "the worker never reached its count"
        await asyncio.sleep(usage_entries.STALE_S)
        assert await usage_entries.settle_stale(database) == 3
        await _exact(database, 3)
    finally:
        thaw.set()
        await asyncio.to_thread(thread.join, 30)
    assert set(outcome["statuses"].values()) == {"copying"}
    await _exact(database, 3)
    assert await database[USAGE_PENDING].count_documents({}) == 0  # the calls' notes are gone


async def test_the_sweep_reads_only_stale_notes_and_drops_a_dead_calls_note_without_entries_after_a_while(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """A call noted but killed before its write leaves a note and no entry: kept while its
    writer may still be writing, dropped after ORPHAN_S; a settled call leaves no note."""
    _, dest = await _two_ses(database, tmp_path)
    await _copying(database, dest)
    assert await database[USAGE_PENDING].count_documents({}) == 0
    now = dt.datetime.now(dt.UTC)
    await database[USAGE_PENDING].insert_many([
        {"_id": "young", "at": now - dt.timedelta(seconds=usage_entries.STALE_S + 5)},
        {"_id": "old", "at": now - dt.timedelta(seconds=usage_entries.ORPHAN_S + 5)}])
    assert await usage_entries.settle_stale(database) == 0
    assert [n["_id"] for n in await database[USAGE_PENDING].find({}).to_list()] == ["young"]
    await _exact(database, 3)


def _in_thread(settings: Settings, code: Any, stalled: threading.Event, thaw: threading.Event,
               work: Any) -> threading.Thread:
    """`work(db)` in its own thread, client and loop (another process, as far as the database
    sees), frozen at the first call of `code` until `thaw`."""
    def run() -> None:
        async def go() -> None:
            client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
            try:
                await work(client[settings.database])
            finally:
                await client.close()

        sys.setprofile(freeze_at_first_call(code, stalled, thaw))
        try:
            asyncio.run(go())
        finally:
            sys.setprofile(None)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def test_a_directory_move_between_a_count_and_its_clearing_carries_no_entry_along(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """A replica add has counted its entries; a directory move copies the files, entries and all;
    the add clears its entries at the old LFNs; the move then drops the originals. The copies must
    not keep the entries: no sweep would find them (the call's note is gone) and a rebuild would
    take them as owed. The clearing moves each file's version, so the move copies them again."""
    await _two_ses(database, tmp_path)
    await mkdir(database, ADMIN, "/vo/moved")
    frozen = [threading.Event() for _ in range(4)]  # writer stalled, writer thaw, move stalled, move thaw

    async def add(db: AsyncDatabase[Document]) -> None:
        assert not (await add_replicas(db, [{"lfn": lfn, "se": "DEST"} for lfn in LFNS]))["failed"]

    async def move_dir(db: AsyncDatabase[Document]) -> None:
        await move(db, ADMIN, "/vo/cut", "/vo/moved/cut")

    writer = _in_thread(settings, usage_entries._clear.__code__, frozen[0], frozen[1], add)
    mover: threading.Thread | None = None
    try:
        assert await asyncio.to_thread(frozen[0].wait, 30), "the add never reached its clearing"
        mover = _in_thread(settings, moves._drop_originals.__code__, frozen[2], frozen[3], move_dir)
        assert await asyncio.to_thread(frozen[2].wait, 30), "the move never reached its drop"
        frozen[1].set()
        await asyncio.to_thread(writer.join, 30)
    finally:
        for thaw in frozen[1::2]:
            thaw.set()
        await asyncio.to_thread(writer.join, 30)
        if mover is not None:
            await asyncio.to_thread(mover.join, 30)
    moved = await fetch_files(database, [lfn.replace("/vo/cut", "/vo/moved/cut") for lfn in LFNS],
                              {"replicas": 1, USAGE_ENTRIES: 1})
    assert len(moved) == 3 and all([r["se"] for r in f["replicas"]] == ["SRC", "DEST"] for f in moved.values())
    assert await database[FILES].count_documents({f"{USAGE_ENTRIES}.0": {"$exists": True}}) == 0
    await _exact(database, 3)
