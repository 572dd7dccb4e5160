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
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, open_requests, put_files, se_root
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
    await rq.submit_transfers(database, [{"lfn": lfn, "dest_se": "DST"} for lfn in LFNS], requester="t")
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
