"""A copy that fails at its destination is the destination's failure: a NotFound from there (an S3
bucket gone) fails the request saying so, and never counts the healthy source replicas missing."""

from __future__ import annotations

from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from catalogue.storage_elements import Protocol, StorageElement
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.s3 import S3Endpoint
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, replica_status, run_until_drained
from transfers import requests as rq
from transfers.failures import DESTINATION_NOT_FOUND
from transfers.worker import TransferWorker


async def test_a_destination_that_answers_not_found_leaves_the_sources_available(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, s3_server: S3Endpoint,
) -> None:
    sources = [disk_se(name, tmp_path / name.lower()) for name in ("A", "B")]
    gone = StorageElement(name="S3X", site="SITE", protocols=[Protocol(
        scheme="s3", host="bucket-that-is-gone", prefix="/data",
        extra={"endpoint_url": s3_server.endpoint_url, "region": s3_server.region})])
    await add_ses(database, *sources, gone)
    await put_files(database, sources, ["/vo/d/f"])
    settings.storage_credentials["S3X"] = {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    fast = fast_settings(settings)
    fast = fast.model_copy(update={"audit": fast.audit.model_copy(update={"suspicious_threshold": 1})})
    for _ in range(2):  # one report would mark a source lost at this threshold
        await rq.submit_transfers(database, [{"lfn": "/vo/d/f", "dest_se": "S3X"}], requester="user:bob")
        await run_until_drained(database, TransferWorker(fast, database), timeout_s=30)
    requests = await database[rq.REQUESTS].find({"lfn": "/vo/d/f"}).to_list()
    assert [(r["state"], r["error_class"]) for r in requests] == [("failed", DESTINATION_NOT_FOUND)] * 2
    assert all("destination answered not found" in r["last_error"] and "NoSuchBucket" in r["last_error"]
               for r in requests), [r["last_error"] for r in requests]
    assert [await replica_status(database, "/vo/d/f", name) for name in ("A", "B")] == ["available", "available"]
    doc = await database[FILES].find_one({"_id": "/vo/d/f"})
    assert not any(r.get("suspicions") for r in doc["replicas"]), doc["replicas"]
