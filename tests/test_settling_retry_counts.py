"""What a worker's settling counts is counted once when the settling meets the database down and
the worker tries it again whole: a copy whose destination replica changed while it ran (on its
request's `copies`), and every transfer on its link's counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.tcp_gate import CutAfter, TcpGate
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, open_requests, put_files
from transfers import link_stats, queueing
from transfers import requests as rq
from transfers.link_series import LINK_HOURS
from transfers.worker import TransferWorker

LFN = "/vo/changed/f"


class ChangeThenCut(monitoring.CommandListener):
    """As the first settling confirms the copy, the replica on DST changes (an administrator marks
    it unavailable, straight on the database); once the database has answered the next update of
    the request (its copy counted, before its end), `gate` drops: the settling meets the outage."""

    def __init__(self, gate: TcpGate, uri: str, database: str) -> None:
        self.gate, self.direct, self.database = gate, MongoClient(uri), database
        self.changed, self.counted, self.dropped = False, None, asyncio.Event()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        updates = repr(event.command.get("updates")) if event.command_name == "update" else ""
        if not self.changed and event.command.get("update") == "files" and "'available'" in updates:
            self.changed = True  # before the confirm is sent: it finds the replica changed
            files = self.direct[self.database]["files"]
            replicas = files.find_one({"_id": LFN})["replicas"]  # (the embedded database has no `$`)
            for replica in replicas:
                replica["status"] = "unavailable" if replica["se"] == "DST" else replica["status"]
            files.update_one({"_id": LFN}, {"$set": {"replicas": replicas}})
        elif self.changed and self.counted is None and event.command.get("update") == rq.REQUESTS:
            self.counted = event.request_id

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if not self.dropped.is_set() and event.request_id == self.counted:
            self.dropped.set()
            self.gate.drop()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to do (the listener interface asks for it)."""


async def test_a_copy_whose_replica_changed_is_counted_once_across_a_retried_settling(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, mongodb_uri: str, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], [LFN])
    await queueing.submit_transfers(database, [{"lfn": LFN, "dest_se": "DST"}], requester="t")
    listener = ChangeThenCut(db_gate, mongodb_uri, settings.database)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{db_gate.port}/", event_listeners=[listener], tz_aware=True,
        serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    worker = TransferWorker(fast_settings(settings, lease_s=3.0, settle_every_s=0.2), client[settings.database])
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            await listener.dropped.wait()
        await db_gate.close()
        await asyncio.sleep(0.6)  # down for a moment, well within a lease
        await db_gate.open()
        async with asyncio.timeout(60):
            while True:  # settled again, failed, retried: copied once more
                if not await open_requests(database):
                    break
                await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await task
        await client.close()
        listener.direct.close()
    done = await database[rq.REQUESTS].find({}).to_list()
    # Two copies made: the one whose replica changed, and the retry's.
    assert [(d["state"], d.get("copies")) for d in done] == [("done", 2)]


async def test_a_transfer_is_counted_once_on_its_link_when_the_settling_is_cut_after_the_links_count(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], [LFN])
    await queueing.submit_transfers(database, [{"lfn": LFN, "dest_se": "DST"}], requester="t")
    cut = CutAfter(db_gate, "update", link_stats.LINK_STATS)  # the hourly series' write meets the outage
    client = cut.client()
    worker = TransferWorker(fast_settings(settings, lease_s=3.0, settle_every_s=0.2), client[settings.database])
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            while True:
                if cut.done:
                    break
                await asyncio.sleep(0.05)
        await db_gate.close()
        await asyncio.sleep(0.6)
        await db_gate.open()
        async with asyncio.timeout(30):
            while True:  # the kept settling is tried again: its series written this time
                if await database[LINK_HOURS].count_documents({}):
                    break
                await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await task
        await client.close()
    links = await link_stats.link_statistics(database)
    assert [(link["source"], link["dest"], link["done"], link["bytes"]) for link in links] == [
        ("SRC", "DST", 1, 1024)]
