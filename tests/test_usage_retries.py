"""Usage counters stay exact across partial writes and retries: a 5,000-file register cut short by
a database outage (503, some records written), then retried until it succeeds, counts each file
once. The API reaches the database through a TCP gate that the test cuts mid-request."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from kernel.db import Document
from kernel.errors import ServiceUnavailable
from kernel.settings import Settings, load_settings
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.tcp_gate import TcpGate
from tests.fixtures.transfers import delete_removed_bytes

FILES = 5000
SIZE = 1000


@pytest.fixture
def settings(db_gate: TcpGate, tmp_path: Path) -> Settings:
    """This module's API (and database fixture) reach the database through the gate."""
    return load_settings(mongodb_uri=f"mongodb://127.0.0.1:{db_gate.port}/", database=f"t_{uuid.uuid4().hex[:12]}",
                         var_dir=tmp_path / "var", api_port=0, db_timeout_ms=1000)


async def settled_count(files: Any) -> int:
    """The number of file records once it has not changed for a second and a half."""
    count, since = -1, time.monotonic()
    while time.monotonic() - since < 1.5:
        now = await files.count_documents({})
        if now != count:
            count, since = now, time.monotonic()
        await asyncio.sleep(0.1)
    return count


async def register_until_answered(admin: Client, files: list[dict[str, Any]]) -> Any:
    return await until_answered(lambda: admin.register_files(files))


async def until_answered(call: Callable[[], Awaitable[Any]], timeout_s: float = 60) -> Any:
    """What a client does after a 503: try again until the database is back."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except ServiceUnavailable:
            assert time.monotonic() < deadline, "the API never came back"
            await asyncio.sleep(0.5)


@pytest.fixture
async def disk(database: AsyncDatabase[Document], tmp_path: Path) -> None:
    await put_storage_element(database, StorageElement(name="DISK", site="S", kind="disk",
                                                       protocols=[Protocol(scheme="file", prefix=str(tmp_path))]))


def batch() -> list[dict[str, Any]]:
    return [{"lfn": f"/vo/retry/f{i:05d}", "size": SIZE, "adler32": "00000001", "replicas": [{"se": "DISK"}]}
            for i in range(FILES)]


async def register_cut_by_an_outage(admin: Client, gate: TcpGate, direct: Any, files: list[dict[str, Any]]) -> int:
    """Register `files` and cut the database off once the insert is under way: the call answers
    503; returns how many records were written all the same."""
    call = asyncio.create_task(admin.register_files(files))
    while await direct.count_documents({}) == 0:
        assert not call.done(), "the register finished before the outage"
        await asyncio.sleep(0.005)
    await gate.cut()
    with pytest.raises(ServiceUnavailable):
        await call
    written = await settled_count(direct)  # the database finishes the cut command on its own
    assert 0 < written <= FILES
    await gate.open()
    return written


async def assert_usage_is_exact(api: RunningApi, files: int) -> None:
    """`cairn usage dir` counts `files`, and `cairn usage rebuild --dry-run` finds no drift."""
    usage = await run_cli(api.url, api.admin_token, "usage", "dir", "/vo/retry", "--json")
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout) == {"path": "/vo/retry", "files": files, "bytes": files * SIZE}
    rebuild = await run_cli(api.url, api.admin_token, "usage", "rebuild", "--dry-run", "--json")
    assert rebuild.returncode == 0, rebuild.stderr
    report = json.loads(rebuild.stdout)
    assert report["drifted"] == 0, report["drift"]


async def test_a_register_cut_by_a_database_outage_then_retried_counts_every_file_once(
    api: RunningApi, disk: None, db_gate: TcpGate, mongodb_uri: str, settings: Settings,
) -> None:
    direct = AsyncMongoClient[Document](mongodb_uri)[settings.database]["files"]  # not through the gate
    async with Client(api.url, api.admin_token, ride_out_s=0) as admin:  # it retries by itself
        written = await register_cut_by_an_outage(admin, db_gate, direct, batch())
        retried = await register_until_answered(admin, batch())
    assert (len(retried["successful"]), retried["failed"]) == (FILES, {})
    assert sum(not r["created"] for r in retried["successful"].values()) == written
    await assert_usage_is_exact(api, FILES)


async def test_removing_files_a_cut_register_left_uncounted_keeps_usage_exact(
    api: RunningApi, disk: None, db_gate: TcpGate, mongodb_uri: str, settings: Settings,
) -> None:
    direct = AsyncMongoClient[Document](mongodb_uri)[settings.database]["files"]
    async with Client(api.url, api.admin_token, ride_out_s=0) as admin:  # it retries by itself
        await register_cut_by_an_outage(admin, db_gate, direct, batch())
        every_other = [f["_id"] for f in await direct.find({}, {"_id": 1}).sort("_id", 1).to_list()][::2]
        removed = await until_answered(lambda: admin.remove_files(every_other, force=True))
        assert not removed["failed"]
        # The removal counted the cut call's records before taking off the removed ones.
        left = await direct.count_documents({})
        await assert_usage_is_exact(api, left)
        await delete_removed_bytes(direct.database, settings)  # the reaper frees their paths
        retried = await register_until_answered(admin, batch())
    assert (len(retried["successful"]), retried["failed"]) == (FILES, {})
    await assert_usage_is_exact(api, FILES)


async def test_moving_a_file_a_cut_register_left_uncounted_keeps_usage_exact(
    api: RunningApi, disk: None, db_gate: TcpGate, mongodb_uri: str, settings: Settings,
) -> None:
    direct = AsyncMongoClient[Document](mongodb_uri)[settings.database]["files"]
    async with Client(api.url, api.admin_token, ride_out_s=0) as admin:  # it retries by itself
        await register_cut_by_an_outage(admin, db_gate, direct, batch())
        first = (await direct.find({}, {"_id": 1}).sort("_id", 1).to_list(1))[0]["_id"]
        await until_answered(lambda: admin.mkdir("/vo/elsewhere"))
        # The move takes the file off its directory's counts: the cut call's must be on them first.
        await until_answered(lambda: admin.move(first, "/vo/elsewhere/moved"))
        # (The moved file's path stays its: the retry leaves that file out.)
        retried = await register_until_answered(admin, [f for f in batch() if f["lfn"] != first])
    assert len(retried["successful"]) == FILES - 1 and not retried["failed"]
    rebuild = await run_cli(api.url, api.admin_token, "usage", "rebuild", "--dry-run", "--json")
    assert rebuild.returncode == 0, rebuild.stderr
    assert json.loads(rebuild.stdout)["drifted"] == 0, json.loads(rebuild.stdout)["drift"]
