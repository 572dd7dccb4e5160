"""A link's counters, and its hourly series, count a settling once when the database carried out
their write but its reply was lost: the worker tries the settling again, and the write again is
recognised by the settling's id (remembered on the counters' documents), not added a second time.
Before, the transfer was counted twice on its link."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.tcp_gate import LoseReply, TcpGate
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, open_requests, put_files
from transfers import link_stats, queueing
from transfers.link_series import LINK_HOURS, hourly_series
from transfers.worker import TransferWorker


@pytest.mark.parametrize("collection", [link_stats.LINK_STATS, LINK_HOURS])
async def test_a_transfer_is_counted_once_when_its_counts_reply_was_lost(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path, collection: str,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    lfns = [f"/vo/lost/f{i}" for i in range(3)]
    await put_files(database, [src], lfns)
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "DST"} for lfn in lfns], requester="t")
    lose = LoseReply(db_gate, "update", collection)
    client = lose.client()
    worker = TransferWorker(fast_settings(settings, lease_s=3.0, settle_every_s=0.2), client[settings.database])
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            while True:
                if db_gate.replies_lost:
                    break
                await asyncio.sleep(0.02)
        await db_gate.close()
        await asyncio.sleep(0.3)
        await db_gate.open()
        async with asyncio.timeout(60):
            while True:
                if not await open_requests(database) and await database[LINK_HOURS].count_documents({}):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # a settling tried again has written its counts
    finally:
        worker.stop()
        await task
        await client.close()
    links = await link_stats.link_statistics(database)
    assert [(link["source"], link["dest"], link["done"], link["bytes"]) for link in links] == [
        ("SRC", "DST", 3, 3 * 1024)]  # before: 6 done when the links' reply was lost
    assert sum((await hourly_series(database, hours=2))["done"]) == 3  # before: 6 when the series' was
