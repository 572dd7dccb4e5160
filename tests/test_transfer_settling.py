"""A worker cycle settles everything that ended in it in bulk: copied, failed and retried, failed
for good, found at the destination already — each counted once, on the request, the link and the
catalogue's usage; and an end meant for an attempt that is over (a done request, an earlier
attempt of the same worker) changes and counts nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.storage_elements import list_storage_elements
from catalogue.usage import rebuild
from kernel.db import Document
from kernel.settings import Settings
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
from transfers import link_stats, queueing
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.copy_steps import Cycle, finish_cycle
from transfers.failures import Failure
from transfers.transfer import Context, Failed, Job, plan
from transfers.worker import TransferWorker


async def test_a_cycle_of_mixed_outcomes_lands_with_every_counter_matching(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    ok = [f"/vo/mix/ok/f{i}" for i in range(6)]
    await put_files(database, [src], [*ok, "/vo/mix/gone", "/vo/mix/blocked/f"])
    await put_files(database, [src, dst], ["/vo/mix/there"])
    (se_root(src) / "vo/mix/gone").unlink()  # the only source is missing: failed for good at once
    # A destination directory that leads out of the SE (refused, not for good): every attempt
    # fails, until none is left.
    (tmp_path / "outside").mkdir()
    (se_root(dst) / "vo/mix/blocked").symlink_to(tmp_path / "outside")
    lfns = [*ok, "/vo/mix/gone", "/vo/mix/blocked/f", "/vo/mix/there"]
    await queueing.submit(database, "transfer", [{"lfn": lfn, "dest_se": "DST"} for lfn in lfns], requester="t",
                          max_attempts=3)
    await run_until_drained(database, TransferWorker(fast_settings(settings), database), timeout_s=90)
    by_lfn = {d["lfn"]: d for d in await database[rq.REQUESTS].find({}).to_list()}
    assert all(by_lfn[lfn]["state"] == "done" and by_lfn[lfn]["copies"] == 1 for lfn in ok)
    assert (by_lfn["/vo/mix/there"]["state"], by_lfn["/vo/mix/there"]["result"]) == ("done", {"already_there": True})
    assert "copies" not in by_lfn["/vo/mix/there"]
    gone, blocked = by_lfn["/vo/mix/gone"], by_lfn["/vo/mix/blocked/f"]
    assert (gone["state"], gone["error_class"], gone["attempts"]) == ("failed", "source_missing", 1)
    assert (blocked["state"], blocked["attempts"]) == ("failed", 3), blocked["last_error"]
    assert blocked["last_error"].startswith("gave up after 3 attempts")
    # The link counts each copy once and each failed attempt once (the file found there is no copy).
    [link] = await link_stats.link_statistics(database)
    assert (link["done"], link["failed"]) == (len(ok), 1 + 3)
    assert link["failures"] == {"source_missing": 1, blocked["error_class"]: 3}
    assert sum(link["failures"].values()) == link["failed"]
    for lfn in ok:
        assert await replica_status(database, lfn, "DST") == "available"
    assert await replica_status(database, "/vo/mix/blocked/f", "DST") is None
    assert await copying_replicas(database) == []
    assert (await rebuild(database, fix=False))["drifted"] == 0


async def _planned(ctx: Context, request: Document, *, without_on: str | None = None) -> Job:
    """The request planned as a worker would, on its file as read now (its replica on
    `without_on` left out: as it was before a copy made it)."""
    ses = {se.name: se for se in await list_storage_elements(ctx.db)}
    file_doc = (await fetch_files(ctx.db, [request["lfn"]]))[request["lfn"]]
    file_doc = {**file_doc, "replicas": [r for r in file_doc["replicas"] if r["se"] != without_on]}
    return await plan(ctx, request, file_doc, ses)


async def _claim(ctx: Context, lfn: str) -> Document:
    request = await rc.claim(ctx.db, ctx.worker, kinds=["transfer"], lease_s=60, extra_filter={"lfn": lfn})
    assert request is not None
    return request


async def _one_transfer(database: AsyncDatabase[Document], tmp_path: Path) -> None:
    """SRC holding /vo/f and a transfer of it to DST, queued."""
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/f"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"}], requester="t")


async def test_a_failure_settled_for_a_done_request_is_not_counted(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await _one_transfer(database, tmp_path)
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    [done] = await database[rq.REQUESTS].find({}).to_list()
    assert done["state"] == "done"
    # A late (or replayed) failure of that attempt, by the worker that did it.
    ctx = Context(database, done["finished_by"], fast_settings(settings).transfers)
    job = await _planned(ctx, {**done, "state": "active"}, without_on="DST")
    assert job.outcome == "copy" and job.source is not None
    await finish_cycle(ctx, Cycle(failures=[Failed(job, Failure("timeout", "late", permanent=False))]))
    after = await rq.get_request(database, done["_id"])
    assert after is not None and (after["state"], after["copies"], after["last_error"]) == ("done", 1, None)
    [link] = await link_stats.link_statistics(database)
    assert (link["done"], link["failed"], link["failures"]) == (1, 0, {})
    assert await replica_status(database, "/vo/f", "DST") == "available"
    assert (await rebuild(database, fix=False))["drifted"] == 0


async def test_an_end_meant_for_an_earlier_attempt_of_the_same_worker_changes_nothing(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await _one_transfer(database, tmp_path)
    ctx = Context(database, "w", fast_settings(settings).transfers)
    first = await _claim(ctx, "/vo/f")
    job = await _planned(ctx, first)
    # Its lease runs out while the worker stalls; the same worker claims the request again.
    # (a second ago: stored times keep milliseconds, and a claim in the same one would not see it expired)
    ran_out = rq.now() - dt.timedelta(seconds=1)
    await database[rq.REQUESTS].update_one({"_id": first["_id"]}, {"$set": {"lease_expires": ran_out}})
    second = await _claim(ctx, "/vo/f")
    assert (second["_id"], second["attempts"]) == (first["_id"], 2)
    # The first attempt's failure, and then its "found there already", settle late: nothing lands.
    await finish_cycle(ctx, Cycle(failures=[Failed(job, Failure("timeout", "stalled", permanent=False))]))
    await finish_cycle(ctx, Cycle(already_there=[job]))
    now = await rq.get_request(database, first["_id"])
    assert now is not None and (now["state"], now["attempts"], now["lease_owner"]) == ("active", 2, "w")
    assert now.get("last_error") is None and "copies" not in now
    assert await link_stats.link_statistics(database) == []
