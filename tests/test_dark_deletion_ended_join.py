"""A clean-dark whose dark file's deletion meets a user's deletion of the same replica that ends
at that moment: its request is submitted again, and the reaper finds the bytes gone (or deletes
them) and records the dark file's cleaning. Before, the clean-dark answered the file failed
("submit again") and the run's entry stayed `requested`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import add_ses, dark_run, disk_se, fast_settings, run_until_drained, write_bytes
from transfers import audit_runs, queueing
from transfers.auditor import request_dark_deletion
from transfers.reaper import Reaper

ROUNDS = 100


async def test_a_clean_dark_meeting_a_users_deletion_as_it_ends_is_carried_out(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    se = disk_se("DARK", tmp_path / "dark")
    await add_ses(database, se)
    fast = fast_settings(settings, lease_s=0.5)
    reaper = Reaper(fast, database)
    refused, runs = 0, []
    for i in range(ROUNDS):
        lfn = f"/vo/ended/f{i}"
        write_bytes(se, lfn, b"dark")
        run_id = await dark_run(database, "DARK", [lfn])
        await queueing.submit(database, "delete", [{"lfn": lfn, "dest_se": "DARK"}], requester="user:bob")
        _, answer = await asyncio.gather(reaper.run_once(), request_dark_deletion(database, run_id, requester="admin"))
        refused += bool(answer["failed"])
        runs.append(run_id)
    await run_until_drained(database, Reaper(fast, database))
    outcomes = [{e["clean"] async for e in audit_runs.entries(database, run, "dark")} for run in runs]
    assert refused == 0  # before: some rounds answered "submit again"
    assert [o for o in outcomes if o & {"requested"}] == []
