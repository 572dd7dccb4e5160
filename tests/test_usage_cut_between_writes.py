"""A replica add or pull whose process dies between its file write and its SE usage write is
counted exactly once all the same: the next transfer worker's sweep settles the count the call
noted on the SE's record (`catalogue.usage_intents`). A process that only stalled there and
resumes after the sweep counted for it counts nothing more. Each is checked by a recount
(`usage rebuild --dry-run`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage_intents
from catalogue.collection_names import FILES
from catalogue.files import fetch_files
from catalogue.storage_elements import StorageElement
from catalogue.usage import INTENTS, USAGE, rebuild, se_key, se_usage
from kernel import db as kernel_db
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.freezing import stalled_call
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files
from tests.fixtures.usage_cuts import profiled
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

    with profiled(profile):
        yield


async def _two_ses(database: AsyncDatabase[Document], tmp_path: Path) -> tuple[StorageElement, StorageElement]:
    src, dest = disk_se("SRC", tmp_path / "src"), disk_se("DEST", tmp_path / "dest")
    await add_ses(database, src, dest)
    await put_files(database, [src], LFNS, size=SIZE)
    return src, dest


async def _copying(db: AsyncDatabase[Document], dest: StorageElement) -> dict[tuple[str, str], str]:
    docs = await fetch_files(db, LFNS, {"replicas": 1, "version": 1, "guid": 1, "size": 1})
    return await register_copying_many(db, [(docs[lfn], dest) for lfn in LFNS])


STALE_S = 0.5  # the tests' `usage_settle_after_s`: a note older than this is a dead call's


async def _next_worker_sweeps(database: AsyncDatabase[Document], settings: Settings) -> None:
    """A transfer worker started after the kill: its first turn sweeps (notes older than its
    `usage_settle_after_s` are a dead call's)."""
    await asyncio.sleep(STALE_S)
    worker = TransferWorker(fast_settings(settings, usage_settle_after_s=STALE_S), database)
    try:
        await worker.run_once()
    finally:
        await worker.close()


async def _notes(db: AsyncDatabase[Document]) -> dict[str, list[str]]:
    """The calls noted on each SE record."""
    return {d["_id"]: sorted(d.get(INTENTS) or {}) for d in await db[USAGE].find({"_id": {"$regex": "^se:"}}).to_list()
            if d.get(INTENTS)}


async def _exact(db: AsyncDatabase[Document], dest_replicas: int) -> None:
    usage = {row["se"]: (row["replicas"], row["bytes"]) for row in await se_usage(db)}
    assert usage["SRC"] == (len(LFNS), len(LFNS) * SIZE)
    assert usage.get("DEST", (0, 0)) == (dest_replicas, dest_replicas * SIZE)
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]
    assert await _notes(db) == {}


async def test_copying_replicas_whose_worker_died_before_counting_them_are_counted_by_the_next(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    _, dest = await _two_ses(database, tmp_path)
    with killed_at_first_usage_write(), pytest.raises(Killed):
        await _copying(database, dest)
    assert [r["se"] for f in (await fetch_files(database, LFNS, {"replicas": 1})).values()
            for r in f["replicas"]] == ["SRC", "DEST"] * 3
    assert list(await _notes(database)) == [se_key("DEST")]
    await _next_worker_sweeps(database, settings)
    await _exact(database, 3)


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
    and their count about to be sent; the sweep counts them; thawed, its count misses (the note
    is gone) and it counts nothing."""
    _, dest = await _two_ses(database, tmp_path)
    async with stalled_call(settings, lambda db: _copying(db, dest), usage_intents.settle.__code__,
                            "worker") as outcome:
        await asyncio.sleep(STALE_S)
        assert await usage_intents.settle_stale(database, STALE_S) == 1
        await _exact(database, 3)
    assert set(outcome["result"].values()) == {"copying"}
    await _exact(database, 3)


async def test_a_call_killed_before_its_file_write_leaves_a_note_the_sweep_settles_with_nothing(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """Noted, then killed before writing: the sweep finds none of its LFNs written by it and
    takes the note away, counting nothing; a note younger than the threshold stays (its call may
    still be writing)."""
    await _two_ses(database, tmp_path)
    await usage_intents.intend(database, "dead", +1, [(lfn, "DEST") for lfn in LFNS])
    await asyncio.sleep(STALE_S)
    await usage_intents.intend(database, "live", +1, [(LFNS[0], "DEST")])
    assert await usage_intents.settle_stale(database, STALE_S) == 1
    assert await _notes(database) == {se_key("DEST"): ["live"]}
    await database[USAGE].update_one({"_id": se_key("DEST")}, {"$unset": {f"{INTENTS}.live": ""}})
    await _exact(database, 0)
