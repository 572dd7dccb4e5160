"""A transfer worker discards a failed copy's destination (its bytes, its `copying` replica) only
while it surely holds the request's lease (`kernel.lease.SURE_PART` of a lease after its last
claim or renewal).

Before, a worker frozen (a stopped process, a paused VM) between reading the replica `copying` and
deleting its bytes resumed after another worker had taken the request over, copied the file and
made the replica available: it deleted those bytes, and the catalogue kept an available replica
with nothing on storage."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.freezing import freeze_at_first_call
from tests.fixtures.transfers import (
    add_ses,
    copying_replicas,
    disk_se,
    fast_settings,
    put_files,
    replica_status,
    run_until_drained,
    se_root,
)
from transfers import destination, queueing
from transfers import requests as rq
from transfers.worker import TransferWorker

LEASE_S = 1.0


def _worker_frozen_at_discard(settings: Settings, stalled: threading.Event, thaw: threading.Event) -> None:
    """A worker in its own thread (its own event loop), frozen as it begins deleting bytes."""
    async def cycles() -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
        try:
            await TransferWorker(settings, client[settings.database]).run(max_cycles=30)
        finally:
            await client.close()

    sys.setprofile(freeze_at_first_call(destination._delete_bytes.__code__, stalled, thaw))
    try:
        asyncio.run(cycles())
    finally:
        sys.setprofile(None)


async def test_a_worker_frozen_before_discarding_spares_the_copy_its_successor_confirmed(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    quick = fast_settings(settings, lease_s=LEASE_S)
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    emptied = 0
    for i in range(3):
        lfn = f"/vo/frozen/f{i}"
        data = (await put_files(database, [src], [lfn], size=2048))[lfn]
        source = se_root(src) / lfn.lstrip("/")
        aside = source.with_name("aside")
        source.rename(aside)  # the first worker's copy fails: its source is missing for now
        await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "DST"}], requester="t")
        stalled, thaw = threading.Event(), threading.Event()
        thread = threading.Thread(target=_worker_frozen_at_discard, args=(quick, stalled, thaw))
        thread.start()
        try:
            assert await asyncio.to_thread(stalled.wait, 30), "the first worker never reached the discard"
            aside.rename(source)
            await asyncio.sleep(LEASE_S * 1.5)  # its lease runs out: another worker takes the request over
            await run_until_drained(database, TransferWorker(quick, database), timeout_s=30)
            assert await replica_status(database, lfn, "DST") == "available"
        finally:
            thaw.set()
            await asyncio.to_thread(thread.join, 30)
        on_storage = se_root(dst) / lfn.lstrip("/")
        emptied += await replica_status(database, lfn, "DST") == "available" and not on_storage.exists()
        assert not on_storage.exists() or on_storage.read_bytes() == data
    assert emptied == 0  # before: 3 of 3 (available replicas whose bytes the frozen worker deleted)


def _hold_past_sure_part(code: Any, stalled: threading.Event) -> Any:
    """Holds the thread at the first call of `code` until its `held_until` argument has passed."""
    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is code and not stalled.is_set():
            stalled.set()
            time.sleep(max(0.0, frame.f_locals["held_until"] - time.monotonic()) + 0.05)

    return profile


async def test_a_failed_copy_left_past_its_sure_lease_is_discarded_once_its_request_ends(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    """Slow past the sure part of its lease, not past the lease: the worker ends the request for
    good, then discards the destination replica it left (nothing else would: the end unsets the
    request's `copying_replica`, by which ended requests' replicas are swept)."""
    quick = fast_settings(settings, lease_s=8.0)
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/slow"], size=2048)
    (se_root(src) / "vo/slow").unlink()  # its only source is missing: the request fails for good
    await queueing.submit_transfers(database, [{"lfn": "/vo/slow", "dest_se": "DST"}], requester="t")
    stalled = threading.Event()

    def slow_worker() -> None:
        async def cycles() -> None:
            client: AsyncMongoClient[Document] = AsyncMongoClient(quick.mongodb_uri, tz_aware=True)
            try:
                await TransferWorker(quick, client[quick.database]).run(max_cycles=20)
            finally:
                await client.close()

        sys.setprofile(_hold_past_sure_part(destination._delete_bytes.__code__, stalled))
        try:
            asyncio.run(cycles())
        finally:
            sys.setprofile(None)

    await asyncio.to_thread(slow_worker)
    assert stalled.is_set()
    request = await database[rq.REQUESTS].find_one({"lfn": "/vo/slow"})
    assert request is not None and request["state"] == "failed"
    assert await copying_replicas(database) == []  # not left `copying` with no request to own it
