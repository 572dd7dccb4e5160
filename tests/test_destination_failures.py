"""A copy that fails at its destination is the destination's failure: a NotFound from there (an S3
bucket gone) fails the request saying so, and never counts the healthy source replicas missing; a
NotFound whose side is unknown (a third-party copy's, naming both ends) counts against the source
only once a stat of the source finds it gone."""

from __future__ import annotations

from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES, fetch_files
from catalogue.storage_elements import Protocol, StorageElement, list_storage_elements
from kernel.db import Document
from kernel.errors import NotFound
from kernel.settings import Settings
from tests.fixtures.s3 import S3Endpoint
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, replica_status, run_until_drained
from transfers import failed_copies, queueing
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.failures import DESTINATION_NOT_FOUND, SOURCE_MISSING, TRANSFER_FAILED, classify
from transfers.transfer import Context, Failed, plan
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
        await queueing.submit_transfers(database, [{"lfn": "/vo/d/f", "dest_se": "S3X"}], requester="user:bob")
        await run_until_drained(database, TransferWorker(fast, database), timeout_s=30)
    requests = await database[rq.REQUESTS].find({"lfn": "/vo/d/f"}).to_list()
    assert [(r["state"], r["error_class"]) for r in requests] == [("failed", DESTINATION_NOT_FOUND)] * 2
    assert all("destination answered not found" in r["last_error"] and "NoSuchBucket" in r["last_error"]
               for r in requests), [r["last_error"] for r in requests]
    assert [await replica_status(database, "/vo/d/f", name) for name in ("A", "B")] == ["available", "available"]
    doc = await database[FILES].find_one({"_id": "/vo/d/f"})
    assert not any(r.get("suspicions") for r in doc["replicas"]), doc["replicas"]


async def test_a_not_found_of_unknown_side_is_the_sources_only_once_a_stat_finds_it_gone(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    ses = [disk_se(name, tmp_path / name.lower()) for name in ("A", "DEST")]
    await add_ses(database, *ses)
    await put_files(database, ses[:1], ["/vo/d/f"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/d/f", "dest_se": "DEST"}], requester="user:bob")
    ctx = Context(database, "w1", fast_settings(settings).transfers, suspicious_threshold=1)
    request = await rc.claim(database, "w1", kinds=["transfer"], lease_s=30)
    assert request is not None
    job = await plan(ctx, request, (await fetch_files(database, ["/vo/d/f"]))["/vo/d/f"],
                     {se.name: se for se in await list_storage_elements(database)})
    # what an HTTP third-party copy reports when the active end got a 404 from somewhere
    failure = classify(NotFound("davs://a/vo/d/f -> davs://dest/vo/d/f: third-party copy failed: status code 404"))
    assert failure.reason == SOURCE_MISSING
    [decided] = await failed_copies.decide(ctx, [Failed(job, failure)])
    assert (decided.note, decided.end.fields["error_class"], decided.end.final) == (None, TRANSFER_FAILED, False)
    assert "the replica on A is there" in decided.end.fields["last_error"]
    await failed_copies.after_end(ctx, [decided], {job.id})
    assert await replica_status(database, "/vo/d/f", "A") == "available"
