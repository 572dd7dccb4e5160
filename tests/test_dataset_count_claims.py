"""A DID's counts stay what its rows hold when an attach, a detach or a dynamic dataset's refresh
is cut short between its row writes and its count writes (the database gone mid-call: 503): the
call leaves its claim, and the next transfer worker's sweep recounts the DID once no live call
holds a claim on it (`catalogue.dataset_count_claims`). Calls are cut short by a real outage: the
database behind a TCP gate that closes as soon as it answered a given command. Claims are aged by
hand (their `at`), as if their call had been gone for a minute."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import dataset_contents, dataset_count_claims, dataset_recount, datasets
from catalogue.dataset_contents import DATASET_FILES
from catalogue.dataset_refresh import refresh
from catalogue.datasets import DidIn
from catalogue.directories import now
from catalogue.metadata import set_metadata
from catalogue.metadata_fields import FieldDeclaration, declare_field
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, tiered_ses
from tests.fixtures.tcp_gate import TcpGate, cut_short
from tests.fixtures.transfers import fast_settings
from transfers.worker import TransferWorker

LFNS = [f"/vo/d/f{i:02d}" for i in range(20)]
DID = "vo:d"


@pytest.fixture
async def dataset(database: AsyncDatabase[Document], tmp_path: Path) -> str:
    """vo:d holding the first ten of 20 files (each with a replica on SRC)."""
    await tiered_ses(database, tmp_path, tier1=0)
    await dataset_on_src(database, DID, LFNS[:10], size=100)
    await dataset_on_src(database, "vo:other", LFNS[10:], size=100)
    return DID


async def _counts(db: AsyncDatabase[Document], did: str = DID) -> dict[str, int]:
    doc = await db[datasets.DATASETS].find_one({"_id": did})
    assert doc is not None
    return {"files": doc["files"], "bytes": doc["bytes"]}


async def _aged(db: AsyncDatabase[Document]) -> None:
    """Every claim as if its call had stopped renewing it a minute ago."""
    await db[dataset_count_claims.CLAIMS].update_many({}, {"$set": {"at": now() - dt.timedelta(minutes=1)}})


async def _next_worker_sweeps(db: AsyncDatabase[Document], settings: Settings) -> None:
    """A transfer worker's turn (it sweeps at its first) once every claim is aged (`_aged`)."""
    await _aged(db)
    worker = TransferWorker(fast_settings(settings, usage_settle_after_s=0.5), db)
    try:
        await worker.run_once()
    finally:
        await worker.close()


async def _exact(db: AsyncDatabase[Document]) -> None:
    report = await dataset_recount.rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]
    assert await db[dataset_count_claims.CLAIMS].count_documents({}) == 0


async def test_an_attach_cut_before_giving_back_the_rows_it_found_there_is_recounted_by_the_sweep(
    database: AsyncDatabase[Document], settings: Settings, dataset: str, db_gate: TcpGate,
) -> None:
    await cut_short(db_gate, settings.database, "insert", DATASET_FILES,
                    lambda db: dataset_contents.attach_files(db, ADMIN, dataset, LFNS))
    assert await database[DATASET_FILES].count_documents({"did": dataset}) == 20
    assert await _counts(database) == {"files": 30, "bytes": 3000}  # the first ten charged twice
    await _next_worker_sweeps(database, settings)
    assert await _counts(database) == {"files": 20, "bytes": 2000}
    await _exact(database)


async def test_a_detach_cut_after_its_delete_is_recounted_by_the_sweep(
    database: AsyncDatabase[Document], settings: Settings, dataset: str, db_gate: TcpGate,
) -> None:
    await cut_short(db_gate, settings.database, "delete", DATASET_FILES,
                    lambda db: dataset_contents.detach_files(db, ADMIN, dataset, LFNS[:4]))
    assert await _counts(database) == {"files": 10, "bytes": 1000}  # four rows gone, counted still
    await _next_worker_sweeps(database, settings)
    assert await _counts(database) == {"files": 6, "bytes": 600}
    await _exact(database)


async def test_a_container_attach_cut_before_its_give_back_is_recounted_by_the_sweep(
    database: AsyncDatabase[Document], settings: Settings, dataset: str, db_gate: TcpGate,
) -> None:
    await datasets.create_did(database, ADMIN, DidIn(did="vo:c", type="container"))
    await dataset_contents.attach_children(database, ADMIN, "vo:c", [dataset])
    await cut_short(db_gate, settings.database, "insert", "container_children",
                    lambda db: dataset_contents.attach_children(db, ADMIN, "vo:c", [dataset, "vo:other"]))
    assert (await database[datasets.DATASETS].find_one({"_id": "vo:c"}) or {})["children"] == 3
    await _next_worker_sweeps(database, settings)
    assert (await database[datasets.DATASETS].find_one({"_id": "vo:c"}) or {})["children"] == 2
    await _exact(database)


async def test_a_did_a_live_call_holds_is_not_recounted_until_that_call_is_done(
    database: AsyncDatabase[Document], settings: Settings, dataset: str, db_gate: TcpGate,
) -> None:
    await cut_short(db_gate, settings.database, "delete", DATASET_FILES,
                    lambda db: dataset_contents.detach_files(db, ADMIN, dataset, LFNS[:4]))
    await _aged(database)
    async with dataset_count_claims.counting(database, dataset):  # a live call on the same DID
        assert await dataset_recount.settle_stale(database, 0.5) == 0
        assert await _counts(database) == {"files": 10, "bytes": 1000}
    assert await dataset_recount.settle_stale(database, 0.5) == 1
    await _exact(database)


async def test_a_refresh_cut_short_between_its_rows_and_its_counts_is_recounted_by_the_sweep(
    database: AsyncDatabase[Document], settings: Settings, dataset: str, db_gate: TcpGate,
) -> None:
    await declare_field(database, FieldDeclaration(key="run", type="int"))
    for lfn in LFNS[:12]:
        await set_metadata(database, ADMIN, lfn, {"run": 1})
    await datasets.create_did(database, ADMIN, DidIn(did="vo:dyn", query="run=1", path="/vo"))
    await cut_short(db_gate, settings.database, "insert", DATASET_FILES,
                    lambda db: refresh(db, ADMIN, "vo:dyn"))
    assert await database[DATASET_FILES].count_documents({"did": "vo:dyn"}) == 12
    assert await _counts(database, "vo:dyn") == {"files": 0, "bytes": 0}  # the counts come last
    await _next_worker_sweeps(database, settings)
    assert await _counts(database, "vo:dyn") == {"files": 12, "bytes": 1200}
    await _exact(database)
