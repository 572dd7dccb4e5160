"""End to end: a `cairn server` process SIGKILLed in the middle of an attach (after the dataset
was charged for the files, before the rows that were there already were given back) leaves the
dataset counting too much; a `cairn daemon transfers` process started later recounts it from
its rows through its sweep (`catalogue.dataset_count_claims`), and the recount finds no drift."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port, wait_for_port
from cairn.sdk import Client
from catalogue import dataset_contents, dataset_count_claims, dataset_recount, datasets
from catalogue.files import register_files
from kernel.db import Document
from kernel.process import child_preexec, stop_processes
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.daemons import DaemonProcesses, daemon_env

pytestmark = pytest.mark.slow

COUNT = 4000
LFNS = [f"/vo/k/f{i:05d}" for i in range(COUNT)]
DID = "vo:k"


async def _files(db: AsyncDatabase[Document]) -> int:
    return int((await db[datasets.DATASETS].find_one({"_id": DID}) or {}).get("files", 0))


@pytest.fixture
def server(api: RunningApi, settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A `cairn server` process on the test's database and signing key (the test kills it)."""
    port = free_port()
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cairn", "server", "--port", str(port)],
                                env=daemon_env(settings), stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=child_preexec)
    try:
        wait_for_port("127.0.0.1", port, timeout_s=60, proc=proc)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop_processes([proc], timeout_s=15)


async def test_a_server_killed_mid_attach_leaves_counts_the_workers_sweep_recounts(
    database: AsyncDatabase[Document], settings: Settings, api: RunningApi, tmp_path: Path,
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    for start in range(0, COUNT, 1000):
        result = await register_files(database, ADMIN, [{"lfn": lfn, "size": 10, "adler32": "00000001"}
                                                        for lfn in LFNS[start:start + 1000]])
        assert not result["failed"]
    await datasets.create_did(database, ADMIN, datasets.DidIn(did=DID))
    assert not (await dataset_contents.attach_files(database, ADMIN, DID, LFNS[:COUNT // 2]))["failed"]

    proc, url = server
    async with Client(url, api.admin_token) as client:
        attach = asyncio.create_task(client.attach(DID, lfns=LFNS))
        deadline = time.monotonic() + 60
        while await _files(database) == COUNT // 2:  # until the attach has charged
            assert time.monotonic() < deadline and not attach.done(), "the attach never charged"
            await asyncio.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(Exception):  # noqa: B017 - the connection dies with the server
            await attach
    killed_at = time.monotonic()
    rows = await database[dataset_contents.DATASET_FILES].count_documents({"did": DID})
    assert await _files(database) > rows, "the kill did not land between the charge and the give-back"
    assert await database[dataset_count_claims.CLAIMS].count_documents({}) == 1

    await asyncio.sleep(max(0.0, dataset_count_claims.LIVE_S + 0.5 - (time.monotonic() - killed_at)))
    (tmp_path / "logs").mkdir()
    worker = DaemonProcesses("transfers", daemon_env(settings, usage_settle_after_s=0.5), tmp_path / "logs")
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while await database[dataset_count_claims.CLAIMS].count_documents({}):
            assert time.monotonic() < deadline, f"the claim was not settled; logs:\n{worker.logs()[-4000:]}"
            await asyncio.sleep(0.2)
    finally:
        worker.stop_all()
    assert await _files(database) == rows
    report = await dataset_recount.rebuild(database, fix=False)
    assert report["drifted"] == 0, report["drift"]
