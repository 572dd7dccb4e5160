"""A transfer worker SIGKILLed mid-copy, whose request the worker taking over can no longer plan
(sixth audit): the request fails, and the `copying` replica the killed attempt registered at the
destination goes with it (it stayed `copying` for ever: nothing swept it, and it kept the file's
directory from moving and the replica from being deleted)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import put_storage_element
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.daemons import DaemonProcesses, daemon_env
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
from transfers import queueing
from transfers import requests as rq
from transfers.worker import TransferWorker

FAST = {"lease_s": 2, "retry_base_s": 0.2, "retry_cap_s": 2, "idle_sleep_s": 0.1}


async def test_a_takeover_that_finds_no_source_removes_the_killed_attempts_copying_replica(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/raw/f"])
    source = se_root(src) / "vo/raw/f"
    source.unlink()
    os.mkfifo(source)  # a source that stalls: the copy waits for bytes that never come
    submitted = await queueing.submit_transfers(database, [{"lfn": "/vo/raw/f", "dest_se": "DST"}], requester="t")
    request_id = submitted["successful"]["/vo/raw/f"]
    (tmp_path / "logs").mkdir()
    workers = DaemonProcesses("transfers", daemon_env(settings, **FAST), tmp_path / "logs")
    proc = workers.start()
    try:
        deadline = time.monotonic() + 20
        while not await database[rq.REQUESTS].count_documents({"_id": request_id, "copying_replica": True}):
            assert time.monotonic() < deadline, workers.logs()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        workers.kill(proc)  # mid-copy
    finally:
        workers.stop_all()
    assert await replica_status(database, "/vo/raw/f", "DST") == "copying"
    src.read_enabled = False  # meanwhile the source SE is switched off for reading
    await put_storage_element(database, src)
    await run_until_drained(database, TransferWorker(fast_settings(settings, **FAST), database), timeout_s=30)
    request = await database[rq.REQUESTS].find_one({"_id": request_id})
    assert request is not None and request["state"] == "failed", request
    assert await copying_replicas(database) == []
    assert await replica_status(database, "/vo/raw/f", "DST") is None
    assert not (se_root(dst) / "vo/raw/f").exists()
