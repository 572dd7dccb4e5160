"""Dark-data deletions and tape recalls hold their requests' leases while they run: with two
daemons and a lease shorter than a batch's work, no request is taken by the second daemon while
the first still works on it (each claimed once, each dark file deleted once, each file recalled
once on the tape system)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import (
    add_ses,
    dark_run,
    disk_se,
    fast_settings,
    put_files,
    run_until_drained,
    tape_lock_held,
    tape_se,
    write_bytes,
)
from transfers import audit_runs, queueing
from transfers import requests as rq
from transfers.auditor import request_dark_deletion
from transfers.reaper import Reaper
from transfers.stager import Stager

DARK = 300
STAGED = 20


async def test_two_reapers_with_a_short_lease_delete_each_dark_file_once(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    se = disk_se("DARK", tmp_path / "dark")
    await add_ses(database, se)
    lfns = [f"/vo/dark/f{i:03d}" for i in range(DARK)]
    for lfn in lfns:
        write_bytes(se, lfn, b"dark")
    run_id = await dark_run(database, "DARK", lfns)
    await request_dark_deletion(database, run_id, requester="admin")
    fast = fast_settings(settings, lease_s=1.0, reaper_batch=DARK)
    await run_until_drained(database, Reaper(fast, database), Reaper(fast, database), timeout_s=120)
    requests = await database[rq.REQUESTS].find({}).to_list()
    taken_twice = [r["lfn"] for r in requests if r["attempts"] > 1]
    assert taken_twice == []
    assert {(r["state"], tuple(r["result"]["deleted"])) for r in requests} == {("done", ("DARK",))}
    outcomes = {e["clean"] async for e in audit_runs.entries(database, run_id, "dark")}
    assert outcomes == {"deleted"}


async def test_two_stagers_with_a_short_lease_recall_each_file_once(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.2)
    await add_ses(database, tape)
    lfns = [f"/vo/raw/f{i:03d}" for i in range(STAGED)]
    await put_files(database, [tape], lfns, size=10)
    await queueing.submit(database, "stage", [{"lfn": lfn, "dest_se": "TAPE"} for lfn in lfns], requester="t")
    fast = fast_settings(settings, lease_s=1.0, stage_poll_s=0.2)
    stagers = [Stager(fast, database), Stager(fast, database)]
    tasks = [asyncio.create_task(stager.run()) for stager in stagers]
    try:
        with tape_lock_held(tmp_path / "t" / "cache"):  # a busy tape system: the recalls wait 3 leases
            await asyncio.sleep(3.0)
    finally:
        for stager in stagers:
            stager.stop()
        await asyncio.gather(*tasks)
    await run_until_drained(database, Stager(fast, database), timeout_s=120)
    requests = await database[rq.REQUESTS].find({}).to_list()
    assert {r["state"] for r in requests} == {"done"}
    assert [r["lfn"] for r in requests if r["attempts"] > 1] == []
    recalls = list((tmp_path / "t" / "cache" / "requests").glob("*.json"))
    assert len(recalls) == STAGED  # on the tape system itself: one recall per file
