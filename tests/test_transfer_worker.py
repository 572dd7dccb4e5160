"""The transfer worker, in-process on local disk SEs: copies verified and registered, failures
classified, sources failed over, nothing left `copying`."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

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
    write_bytes,
)
from transfers import cancellation, link_stats, queueing
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.worker import TransferWorker


async def test_replicated_files_are_verified_and_registered_available(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    lfns = [f"/vo/run/f{i}" for i in range(20)]
    contents = await put_files(database, [src], lfns)
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "DST"} for lfn in lfns], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    for lfn in lfns:
        assert (se_root(dst) / lfn.lstrip("/")).read_bytes() == contents[lfn]
        assert await replica_status(database, lfn, "DST") == "available"
    done = await database[rq.REQUESTS].find({}).to_list()
    assert {d["state"] for d in done} == {"done"}
    assert all(d["copies"] == 1 and d["result"]["source_se"] == "SRC" for d in done)
    [link] = await link_stats.link_statistics(database)
    assert (link["source"], link["dest"], link["done"], link["bytes"]) == ("SRC", "DST", 20, 20 * 1024)


async def test_a_corrupt_source_is_marked_bad_and_another_source_is_used(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    # Both sources sit at the destination's site; A sorts first by name, so it is tried first.
    a, b, dst = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, a, b, dst)
    contents = await put_files(database, [a, b], ["/vo/f"])
    write_bytes(a, "/vo/f", b"X" * len(contents["/vo/f"]))
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "done" and request["result"]["source_se"] == "B"
    assert request["failed_sources"] == ["A"]
    assert await replica_status(database, "/vo/f", "A") == "bad"
    assert await replica_status(database, "/vo/f", "DST") == "available"
    assert (se_root(dst) / "vo/f").read_bytes() == contents["/vo/f"]
    [link_a, _] = await link_stats.link_statistics(database)
    assert link_a["failures"] == {"checksum_mismatch": 1}


async def test_a_corrupt_only_source_fails_the_request_and_leaves_no_copying_replica(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/f"], size=100)
    write_bytes(src, "/vo/f", b"Y" * 100)
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert (request["state"], request["error_class"]) == ("failed", "checksum_mismatch")
    assert "no other source" in request["last_error"]
    assert await replica_status(database, "/vo/f", "SRC") == "bad"
    assert await replica_status(database, "/vo/f", "DST") is None
    assert not (se_root(dst) / "vo/f").exists()
    assert await copying_replicas(database) == []


async def test_a_missing_source_file_fails_over_then_fails_permanently(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/gone"])
    (se_root(src) / "vo/gone").unlink()
    await queueing.submit_transfers(database, [{"lfn": "/vo/gone", "dest_se": "DST"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert (request["state"], request["error_class"], request["attempts"]) == ("failed", "source_missing", 1)


async def test_a_file_without_a_usable_replica_fails_with_no_source(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    src.read_enabled = False
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/f"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"},
                                               {"lfn": "/vo/nothing", "dest_se": "DST"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    by_lfn = {d["lfn"]: d async for d in database[rq.REQUESTS].find({})}
    assert (by_lfn["/vo/f"]["state"], by_lfn["/vo/f"]["error_class"]) == ("failed", "no_source")
    assert (by_lfn["/vo/nothing"]["state"], by_lfn["/vo/nothing"]["error_class"]) == ("failed", "no_such_file")


async def test_a_file_already_at_the_destination_is_done_without_a_copy(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src, dst], ["/vo/f"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "done" and request["result"] == {"already_there": True}
    assert "copies" not in request


async def test_a_cancelled_request_left_copying_by_a_dead_worker_is_cleaned_up(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/f"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/f", "dest_se": "DST"}], requester="t")
    # A worker registered the destination and started writing, then died; the user cancels.
    claimed = await rc.claim(database, "dead-worker", kinds=["transfer"], lease_s=60)
    assert claimed is not None
    from transfers.destination import register_copying

    assert await register_copying(database, "/vo/f", dst) == "copying"
    await rq.flag_copying_replica(database, claimed["_id"])
    partial = write_bytes(dst, "/vo/f", b"half")
    assert await cancellation.cancel(database, {"_id": claimed["_id"]}) == 1
    worker = TransferWorker(fast_settings(settings), database)
    await worker.run(max_cycles=1)
    assert await copying_replicas(database) == []
    assert await replica_status(database, "/vo/f", "DST") is None
    assert not partial.exists()
    doc = await database[rq.REQUESTS].find_one({})
    assert doc is not None and "copying_replica" not in doc and doc["state"] == "cancelled"


async def test_stream_copies_between_local_ses_keep_the_catalogue_adler32(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    contents = await put_files(database, [src], ["/vo/big"], size=3 << 20)
    await queueing.submit_transfers(database, [{"lfn": "/vo/big", "dest_se": "DST"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None and request["result"]["mode"] == "stream"
    assert request["result"]["adler32"] == f"{zlib.adler32(contents['/vo/big']):08x}"


async def test_an_interrupted_copy_is_cleaned_up_and_its_request_released_or_left_to_its_new_owner(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    from transfers.destination import register_copying
    from transfers.transfer import Context, abandon

    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    await put_files(database, [src], ["/vo/mine", "/vo/taken"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/mine", "dest_se": "DST"}], requester="t")
    ctx = Context(database, "me", fast_settings(settings).transfers)
    mine = await rc.claim(database, "me", kinds=["transfer"], lease_s=60)
    assert mine is not None
    await register_copying(database, "/vo/mine", dst)
    partial = write_bytes(dst, "/vo/mine", b"half")
    # Stopping (SIGTERM): our replica and bytes go, the request returns to the queue uncounted.
    await abandon(ctx, mine["_id"], "/vo/mine", dst, stopping=True)
    assert await replica_status(database, "/vo/mine", "DST") is None and not partial.exists()
    doc = await rq.get_request(database, mine["_id"])
    assert doc is not None and (doc["state"], doc["attempts"]) == ("queued", 0)
    # Lease lost to another worker: its replica is its business.
    await queueing.submit_transfers(database, [{"lfn": "/vo/taken", "dest_se": "DST"}], requester="t")
    taken = await rc.claim(database, "other", kinds=["transfer"], lease_s=60, extra_filter={"lfn": "/vo/taken"})
    assert taken is not None
    await register_copying(database, "/vo/taken", dst)
    await abandon(ctx, taken["_id"], "/vo/taken", dst, stopping=False)
    assert await replica_status(database, "/vo/taken", "DST") == "copying"


async def test_no_done_request_is_counted_as_a_failure_while_leases_are_renewed_often(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Leases renewed every second while requests end all the time: a renewal that meets a
    # request just ended must not stop its work, nor count it failed on its link.
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    lfns = [f"/vo/renew/f{i:03d}" for i in range(150)]
    await put_files(database, [src], lfns, size=2048)
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "DST"} for lfn in lfns], requester="t")
    worker = TransferWorker(fast_settings(settings, lease_s=4.0, global_limit=32, prefetch=16), database)
    with caplog.at_level(logging.WARNING, logger="cairn.transfers"):
        await run_until_drained(database, worker, timeout_s=120)
    docs = await database[rq.REQUESTS].find({}).to_list()
    assert {d["state"] for d in docs} == {"done"} and all(d["copies"] == 1 for d in docs)
    [link] = await link_stats.link_statistics(database)
    assert (link["done"], link["failed"]) == (150, 0)
    state = worker.optimizer.link("SRC", "DST")
    assert all(state.results) and state.active == 0
    assert [r.getMessage() for r in caplog.records if "lost the lease" in r.getMessage()] == []
    # The link reports what its worker's database work cost per file.
    assert link["db_commands"] > 0 and 0 < link["db_commands_per_file"] < 10
