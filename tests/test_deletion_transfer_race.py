"""A replica a deletion has retired is never taken over by a transfer while the deletion may still
delete the bytes at its path: the transfer waits (retried) until the record is gone, then copies
afresh. Before, the transfer made the retired replica `copying`, copied and flipped it `available`,
and the deletion then deleted those fresh bytes: `available` in the catalogue, nothing on the SE.

The deletion is run in its real steps (`transfers.deletion`), as a reaper slow between them does."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from catalogue.replica_removal import REMOVAL, REMOVAL_HORIZON_S, being_removed, remove_retired
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    put_files,
    replica_status,
    run_until_drained,
    se_root,
)
from transfers import queueing
from transfers import requests as rq
from transfers.deletion import Deletion, delete_bytes, retire_many
from transfers.failures import DESTINATION_BEING_DELETED
from transfers.worker import TransferWorker


async def _until_refused_or_ended(db: AsyncDatabase[Document], worker: TransferWorker) -> Document:
    """Run the worker's cycles until its transfer was refused once (or ended)."""
    async with asyncio.timeout(20):
        while True:
            await worker.run_once()
            doc = await db[rq.REQUESTS].find_one({"kind": "transfer"})
            assert doc is not None
            if doc.get("error_class") == DESTINATION_BEING_DELETED or doc["state"] in rq.FINAL_STATES:
                return doc
            await asyncio.sleep(0.05)


async def test_a_transfer_waits_for_a_deletion_at_work_on_its_destination_replica(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a, b], ["/vo/f"])
    ses = {"A": a, "B": b}
    retired = await retire_many(database, [Deletion("d", "/vo/f", ("B",))], ses)  # the deletion's first step
    assert retired.targets == {"d": [("/vo/f", "B")]}
    await queueing.submit(database, "transfer", [{"lfn": "/vo/f", "dest_se": "B"}], requester="user:y", max_attempts=50)
    fast = fast_settings(settings)
    refused = await _until_refused_or_ended(database, TransferWorker(fast, database))
    assert refused["state"] == "queued" and "a deletion is removing this replica" in refused["last_error"], refused
    assert await replica_status(database, "/vo/f", "B") == "unavailable"
    # the deletion's last steps: the bytes, then the record
    assert not await delete_bytes(retired.places, ses, settings.storage_credentials)
    assert await remove_retired(database, [("/vo/f", "B")]) == {("/vo/f", "B")}
    await run_until_drained(database, TransferWorker(fast, database), timeout_s=30)
    done = await database[rq.REQUESTS].find_one({"kind": "transfer"})
    assert done is not None and done["state"] == "done", done
    assert await replica_status(database, "/vo/f", "B") == "available"
    assert (se_root(b) / "vo/f").exists()


async def _retired_long_ago(db: AsyncDatabase[Document], lfn: str, se: str) -> Document:
    """Date the replica's retirement back beyond the horizon (a deletion abandoned then); returns it."""
    doc = await db[FILES].find_one({"_id": lfn})
    assert doc is not None
    index = next(i for i, r in enumerate(doc["replicas"]) if r["se"] == se)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=REMOVAL_HORIZON_S + 60)
    await db[FILES].update_one({"_id": lfn}, {"$set": {f"replicas.{index}.modified": long_ago}})
    return {**doc["replicas"][index], "modified": long_ago}


async def test_a_replica_whose_deletion_was_abandoned_long_ago_is_copied_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a, b], ["/vo/f"])
    await retire_many(database, [Deletion("d", "/vo/f", ("B",))], {"A": a, "B": b})
    (se_root(b) / "vo/f").unlink()  # its bytes went; the deleter never came back for the record
    await _retired_long_ago(database, "/vo/f", "B")
    await queueing.submit(database, "transfer", [{"lfn": "/vo/f", "dest_se": "B"}], requester="user:y")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database), timeout_s=30)
    assert await replica_status(database, "/vo/f", "B") == "available"
    assert (se_root(b) / "vo/f").exists()


async def test_a_deletion_taking_over_an_abandoned_one_marks_the_replica_afresh_with_its_token(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a, b], ["/vo/f"])
    await retire_many(database, [Deletion("d1", "/vo/f", ("B",))], {"A": a, "B": b})
    stale = await _retired_long_ago(database, "/vo/f", "B")
    assert not being_removed(stale, dt.datetime.now(dt.UTC))
    await retire_many(database, [Deletion("d2", "/vo/f", ("B",))], {"A": a, "B": b})
    doc = await database[FILES].find_one({"_id": "/vo/f"})
    assert doc is not None
    [now_b] = [r for r in doc["replicas"] if r["se"] == "B"]
    assert being_removed(now_b, dt.datetime.now(dt.UTC))
    assert now_b[REMOVAL] == stale[REMOVAL]  # a count may have taken the token: it is kept
