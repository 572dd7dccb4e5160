"""A stager that dies between asking the tape system for a recall and recording it on the request
leaves no pin that nobody knows: the recall's id is noted on the request before the ask, and the
stager taking the request over asks again under it (one recall on the tape system), so the user's
release drops the only pin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import ServiceUnavailable
from kernel.settings import Settings
from tests.fixtures.tcp_gate import TcpGate
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, run_until_drained, tape_se
from transfers import cancellation, queueing
from transfers import requests as rq
from transfers.stager import Stager
from transfers.worker import TransferWorker


class DropAtRecord(monitoring.CommandListener):
    """Drops `gate` as the stager sends the write that records its requests `staging`: the recall
    was asked, its record meets the outage (as if the stager died there)."""

    def __init__(self, gate: TcpGate) -> None:
        self.gate, self.dropped = gate, False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        changes = [u.get("u") for u in event.command.get("updates", [])] if event.command_name == "update" else []
        if not self.dropped and event.command.get("update") == rq.REQUESTS and "'staging'" in repr(changes):
            self.dropped = True
            self.gate.drop()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to do (the listener interface asks for it)."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to do (the listener interface asks for it)."""


def _live_pins(cache: Path) -> list[dict[str, float]]:
    return [pins for p in (cache / "pins").glob("*.json") if (pins := {
        k: v for k, v in json.loads(p.read_text())["pins"].items() if v > time.time()})]


async def test_a_stager_dying_between_the_recall_and_its_record_leaves_no_second_pin(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path,
) -> None:
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.2)
    await add_ses(database, tape)
    await put_files(database, [tape], ["/vo/raw/f"], size=10)
    submitted = await queueing.submit(database, "stage", [{"lfn": "/vo/raw/f", "dest_se": "TAPE"}], requester="t")
    request_id = submitted["successful"]["/vo/raw/f"]
    fast = fast_settings(settings, lease_s=1.0, stage_poll_s=0.2, pin_lifetime_s=600)
    listener = DropAtRecord(db_gate)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{db_gate.port}/", event_listeners=[listener], tz_aware=True,
        serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    try:
        dying = Stager(fast, client[settings.database])
        with contextlib.suppress(ServiceUnavailable):
            await dying.run_once()
        assert listener.dropped, "the stager recorded no staging"
    finally:
        await client.close()
        await db_gate.open()
    cache = tmp_path / "t" / "cache"
    assert len(list((cache / "requests").glob("*.json"))) == 1  # asked, not recorded
    restarted = Stager(fast, database)  # takes the request once the dead one's lease ran out
    async with asyncio.timeout(30):
        while (await rq.get_request(database, request_id) or {}).get("state") != "done":
            await restarted.run_once()
            await asyncio.sleep(0.1)
    assert len(list((cache / "requests").glob("*.json"))) == 1  # on the tape system: one recall
    assert await cancellation.ask_release(database, {"_id": request_id}) == 1
    await restarted.run_once()
    await asyncio.sleep(0.4)  # past the drive time: any other recall is staged and pinned by now
    assert _live_pins(cache) == []


async def test_a_worker_dying_between_its_recall_and_the_parking_leaves_no_second_pin(
    database: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, tmp_path: Path,
) -> None:
    tape, dst = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.2), disk_se("DST", tmp_path / "dst")
    await add_ses(database, tape, dst)
    await put_files(database, [tape], ["/vo/raw/g"], size=10)
    await queueing.submit_transfers(database, [{"lfn": "/vo/raw/g", "dest_se": "DST"}], requester="t")
    fast = fast_settings(settings, lease_s=1.0, stage_poll_s=0.2, pin_lifetime_s=600)
    listener = DropAtRecord(db_gate)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{db_gate.port}/", event_listeners=[listener], tz_aware=True,
        serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    dying = TransferWorker(fast, client[settings.database])
    try:
        async with asyncio.timeout(20):
            while not listener.dropped:
                with contextlib.suppress(ServiceUnavailable):
                    await dying.run_once()
    finally:
        await dying.keeper.stop()  # it dies here: nothing of it runs any more
        await client.close()
        await db_gate.open()
    cache = tmp_path / "t" / "cache"
    assert len(list((cache / "requests").glob("*.json"))) == 1  # asked, not recorded
    await run_until_drained(database, TransferWorker(fast, database), Stager(fast, database), timeout_s=60)
    [request] = await database[rq.REQUESTS].find({}).to_list()
    assert request["state"] == "done", request
    assert len(list((cache / "requests").glob("*.json"))) == 1  # on the tape system: one recall
    await asyncio.sleep(0.4)
    assert _live_pins(cache) == []  # the transfer's end released the only pin
