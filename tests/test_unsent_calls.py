"""Calls that are not safe to send twice (a move, a removal, a DID's creation) wait for an API
that went away as long as no connection can be made to it: such a call was never sent, so
sending it once the API listens again does its work once (`kernel.client.NotSent`). Before, each
failed at once while the server restarted, as a removal whose answer was lost still does (sent
again, it would answer 404 for what its first sending did; a move names itself and is sent again)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port
from cairn.sdk import Client
from catalogue.collection_names import FILES
from kernel.db import Document
from kernel.errors import ServiceUnavailable
from kernel.process import stop_processes
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.api_process import start_api_process
from tests.test_calls_sent_again import answer_lost

RESTART_S = 1.5


async def _files(client: Client, *lfns: str) -> None:
    outcome = await client.register_files([{"lfn": lfn, "size": 10, "adler32": "00000001"} for lfn in lfns])
    assert sorted(outcome["successful"]) == sorted(lfns), outcome


async def test_a_move_a_removal_and_a_did_wait_for_an_api_restarting_and_are_done_once(
    api: RunningApi, settings: Settings, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    port = free_port()
    server = await asyncio.to_thread(start_api_process, settings, port, tmp_path / "server.log")
    try:
        async with Client(f"http://127.0.0.1:{port}", api.admin_token) as client:
            await client.mkdir("/vo/unsent/empty", parents=True)
            await _files(client, "/vo/unsent/a", "/vo/unsent/b")
            os.kill(server.pid, signal.SIGKILL)
            await asyncio.to_thread(server.wait)

            async def start_again() -> None:
                await asyncio.sleep(RESTART_S)
                nonlocal server
                server = await asyncio.to_thread(start_api_process, settings, port, tmp_path / "server.log")

            restart = asyncio.ensure_future(start_again())
            began = time.monotonic()
            moved, removed, files_removed, did = await asyncio.gather(
                client.move("/vo/unsent/a", "/vo/unsent/a2"), client.remove("/vo/unsent/empty"),
                client.remove_files(["/vo/unsent/b"]), client.create_did("vo:unsent"))
            await restart
            assert time.monotonic() - began >= RESTART_S
            assert moved["path"] == "/vo/unsent/a2" and removed["removed"]
            assert list(files_removed["successful"]) == ["/vo/unsent/b"] and not files_removed["failed"]
            assert did["did"] == "vo:unsent"
        assert sorted(d["_id"] for d in await database[FILES].find({"_id": {"$regex": "^/vo/unsent/"}}).to_list()) \
            == ["/vo/unsent/a2"]
        async with Client(f"http://127.0.0.1:{port}", api.admin_token, ride_out_s=0) as impatient:
            await impatient.whoami()
            os.kill(server.pid, signal.SIGKILL)
            await asyncio.to_thread(server.wait)
            with pytest.raises(ServiceUnavailable):  # told at once: no ride-out asked for
                await impatient.move("/vo/unsent/a2", "/vo/unsent/a4")
    finally:
        stop_processes([server], timeout_s=15)


async def test_a_removal_whose_answer_was_lost_is_told_at_once_and_done_once(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    """A removal is not named: sent again, it would answer 404 for its own work. (A move is, and
    is answered what it did: `tests/test_move_requests.py`.)"""
    async with api.client() as client:
        await _files(client, "/vo/lost/a", "/vo/lost/b")

    async def remove(client: Client) -> Any:
        try:
            return await client.remove("/vo/lost/a")
        except ServiceUnavailable as exc:
            return exc

    began = time.monotonic()
    answer = await answer_lost(api, api.admin_token, b"POST /api/v1/namespace/remove", remove)
    assert isinstance(answer, ServiceUnavailable) and time.monotonic() - began < 10, answer
    assert [d["_id"] async for d in database[FILES].find({"_id": {"$regex": "^/vo/lost/"}})] == ["/vo/lost/b"]
