"""A transfer worker whose settling of finished copies meets the database down keeps that batch,
renews its leases and settles it once the database is back: each finished copy is settled
without a second copy on the storage itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.tcp_gate import TcpGate
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    open_requests,
    put_files,
    replica_status,
    se_root,
    write_bytes,
)
from transfers import link_stats, queueing
from transfers import requests as rq
from transfers.worker import TransferWorker

LFNS = [f"/vo/settle/f{i}" for i in range(8)]


class DropAtConfirm(monitoring.CommandListener):
    """Drops `gate` as the first update flipping replicas to `available` (a settling) is sent:
    the copies are made, their settling meets the outage."""

    def __init__(self, gate: TcpGate) -> None:
        self.gate, self.dropped = gate, asyncio.Event()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.dropped.is_set() and event.command_name == "update" and event.command.get("update") == "files" \
                and "'available'" in repr(event.command.get("updates")):
            self.dropped.set()
            self.gate.drop()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to do (the listener interface asks for it)."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to do (the listener interface asks for it)."""


async def test_a_settling_cut_by_an_outage_is_retried_without_copying_again(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], LFNS)
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "DST"} for lfn in LFNS], requester="t")
    listener = DropAtConfirm(db_gate)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{db_gate.port}/", event_listeners=[listener], tz_aware=True,
        serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    fast = fast_settings(settings, lease_s=2.0, settle_every_s=0.2)
    worker = TransferWorker(fast, client[settings.database])
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            await listener.dropped.wait()
        await db_gate.close()
        # The copies of the batch being settled are on storage: each file's bytes, as first written.
        written = {lfn: (se_root(dst) / lfn.lstrip("/")).stat().st_ino for lfn in LFNS
                   if (se_root(dst) / lfn.lstrip("/")).exists()}
        assert written, "the settling met the outage before any copy was made"
        await asyncio.sleep(0.6)  # down for a moment, well within a lease
        await db_gate.open()
        async with asyncio.timeout(60):
            while True:  # the same worker settles its kept batch once the database is back
                if not await open_requests(database):
                    break
                await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await task
        await client.close()
    copied_again = [lfn for lfn, ino in written.items() if (se_root(dst) / lfn.lstrip("/")).stat().st_ino != ino]
    assert copied_again == []
    done = await database[rq.REQUESTS].find({}).to_list()
    assert {(d["state"], d.get("copies")) for d in done} == {("done", 1)}


class CutAfterEnds(monitoring.CommandListener):
    """Drops `gate` once the database has answered the settling's bulk end of requests: the ends
    are written, the steps after them (the corrupt source marked bad, the link's count) meet the
    outage."""

    def __init__(self, gate: TcpGate) -> None:
        self.gate, self.dropped, self.request = gate, asyncio.Event(), None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        changes = [u.get("u") for u in event.command.get("updates", [])] if event.command_name == "update" else []
        if self.request is None and event.command.get("update") == rq.REQUESTS and "'ended_by'" in repr(changes):
            self.request = event.request_id

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if not self.dropped.is_set() and event.request_id == self.request:
            self.dropped.set()
            self.gate.drop()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to do (the listener interface asks for it)."""


async def test_a_settling_cut_after_its_ends_still_marks_the_corrupt_source_and_counts_the_link(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path,
) -> None:
    a, b, dst = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, a, b, dst)
    contents = await put_files(database, [a, b], ["/vo/f"])
    write_bytes(a, "/vo/f", b"X" * len(contents["/vo/f"]))  # A is tried first, and is corrupt
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"}], requester="t")
    listener = CutAfterEnds(db_gate)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{db_gate.port}/", event_listeners=[listener], tz_aware=True,
        serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    worker = TransferWorker(fast_settings(settings, lease_s=2.0, settle_every_s=0.2), client[settings.database])
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            await listener.dropped.wait()
        await db_gate.close()
        await asyncio.sleep(0.6)
        await db_gate.open()
        async with asyncio.timeout(60):
            while True:
                if not await open_requests(database):
                    break
                await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await task
        await client.close()
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None and (request["state"], request["result"]["source_se"]) == ("done", "B")
    assert await replica_status(database, "/vo/f", "A") == "bad"
    link_a = next(link for link in await link_stats.link_statistics(database) if link["source"] == "A")
    assert link_a["failures"] == {"checksum_mismatch": 1}
