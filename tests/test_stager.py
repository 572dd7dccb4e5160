"""The stager: stage requests brought online and released; transfers from tape staged, then copied."""

from __future__ import annotations

from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from storage_plugins.registry import plugin_for
from storage_plugins.tape import TapePlugin
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    put_files,
    replica_status,
    run_until_drained,
    se_root,
    tape_se,
)
from transfers import requests as rq
from transfers.stager import Stager
from transfers.worker import TransferWorker


async def test_a_stage_request_is_done_once_the_file_is_online_in_the_disk_cache(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.5)
    await add_ses(database, tape)
    await put_files(database, [tape], ["/vo/raw/f"])
    await rq.submit(database, "stage", [{"lfn": "/vo/raw/f", "dest_se": "TAPE"}], requester="t")
    await run_until_drained(database, Stager(fast_settings(settings), database), timeout_s=30)
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "done" and request["stage"]["se"] == "TAPE"
    plugin = plugin_for(request["stage"]["url"], tape.protocols[0].extra)
    assert isinstance(plugin, TapePlugin) and await plugin.is_online(request["stage"]["url"])


async def test_a_transfer_whose_only_source_is_on_tape_waits_in_staging_then_copies(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape, dst = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.5), disk_se("DST", tmp_path / "dst")
    await add_ses(database, tape, dst)
    contents = await put_files(database, [tape], ["/vo/raw/f"])
    await rq.submit_transfers(database, [{"lfn": "/vo/raw/f", "dest_se": "DST"}], requester="t")
    fast = fast_settings(settings)
    worker = TransferWorker(fast, database)
    await worker.run(max_cycles=1)
    parked = await database[rq.REQUESTS].find_one({})
    assert parked is not None and parked["state"] == "staging" and parked["stage"]["se"] == "TAPE"
    await run_until_drained(database, worker, Stager(fast, database), timeout_s=30)
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "done" and request["result"]["source_se"] == "TAPE"
    assert (se_root(dst) / "vo/raw/f").read_bytes() == contents["/vo/raw/f"]
    assert await replica_status(database, "/vo/raw/f", "DST") == "available"


async def test_staging_a_file_without_a_replica_on_that_tape_fails(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape, disk = tape_se("TAPE", tmp_path / "t"), disk_se("DISK", tmp_path / "d")
    await add_ses(database, tape, disk)
    await put_files(database, [disk], ["/vo/f"])
    await rq.submit(database, "stage", [{"lfn": "/vo/f", "dest_se": "TAPE"}], requester="t")
    await run_until_drained(database, Stager(fast_settings(settings), database), timeout_s=30)
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "failed" and "no replica on TAPE" in request["last_error"]
