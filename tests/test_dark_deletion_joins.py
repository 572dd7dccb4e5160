"""A dark file's deletion (an audit run's clean-dark) and a user's deletion of the same replica
share one request that does both: the run sees its dark file's cleaning recorded whichever came
first, and the user's replica is deleted even when the dark one turned out not to be dark."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import (
    add_ses,
    dark_run,
    disk_se,
    fast_settings,
    put_files,
    run_until_drained,
    write_bytes,
)
from transfers import audit_runs, queueing
from transfers import requests as rq
from transfers.auditor import request_dark_deletion
from transfers.reaper import Reaper

ROUNDS = 60


async def _clean_outcome(db: AsyncDatabase[Document], run_id: str) -> set[str]:
    return {e["clean"] async for e in audit_runs.entries(db, run_id, "dark")}


async def test_a_clean_dark_meeting_a_users_deletion_of_the_path_deletes_the_dark_file_and_counts_it(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    se = disk_se("DARK", tmp_path / "dark")
    await add_ses(database, se)
    path = write_bytes(se, "/vo/d/x", b"nobody registered me")
    run_id = await dark_run(database, "DARK", ["/vo/d/x"])
    users = await queueing.submit(database, "delete", [{"lfn": "/vo/d/x", "dest_se": "DARK"}], requester="user:bob")
    answer = await request_dark_deletion(database, run_id, requester="admin")
    assert answer["successful"] == users["successful"]  # one request does both
    await run_until_drained(database, Reaper(fast_settings(settings), database))
    assert not path.exists()
    assert await _clean_outcome(database, run_id) == {"deleted"}
    [request] = await database[rq.REQUESTS].find({}).to_list()
    assert request["state"] == "done", request


async def test_a_users_deletion_meeting_a_clean_dark_still_deletes_the_replica_registered_since(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    keep, se = disk_se("KEEP", tmp_path / "keep"), disk_se("DARK", tmp_path / "dark")
    await add_ses(database, keep, se)
    write_bytes(se, "/vo/d/y", b"dark for now")
    run_id = await dark_run(database, "DARK", ["/vo/d/y"])
    await request_dark_deletion(database, run_id, requester="admin")
    await put_files(database, [keep, se], ["/vo/d/y"])  # registered there since: not dark any more
    users = await queueing.submit(database, "delete", [{"lfn": "/vo/d/y", "dest_se": "DARK"}], requester="user:bob")
    assert not users["failed"], users
    await run_until_drained(database, Reaper(fast_settings(settings), database))
    files = await fetch_files(database, ["/vo/d/y"])
    assert [r["se"] for r in files["/vo/d/y"]["replicas"]] == ["KEEP"]
    assert await _clean_outcome(database, run_id) == {"kept: registered since"}
    [request] = await database[rq.REQUESTS].find({}).to_list()
    assert (request["state"], request["result"]) == ("done", {"deleted": ["DARK"]}), request


async def test_a_clean_dark_joining_a_deletion_the_reaper_is_working_on_is_still_counted(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    se = disk_se("DARK", tmp_path / "dark")
    await add_ses(database, se)
    fast = fast_settings(settings, lease_s=0.5)
    reaper = Reaper(fast, database)
    runs = []
    for i in range(ROUNDS):  # the join lands while the reaper holds the user's request, or not
        lfn = f"/vo/race/f{i}"
        write_bytes(se, lfn, b"dark")
        run_id = await dark_run(database, "DARK", [lfn])
        await queueing.submit(database, "delete", [{"lfn": lfn, "dest_se": "DARK"}], requester="user:bob")
        _, answer = await asyncio.gather(reaper.run_once(),
                                         request_dark_deletion(database, run_id, requester="admin"))
        if answer["successful"]:  # else it is told the user's deletion ended meanwhile: to clean again
            runs.append(run_id)
    await run_until_drained(database, Reaper(fast, database))
    uncounted = [run for run in runs if await _clean_outcome(database, run) == {"requested"}]
    assert runs and uncounted == []
