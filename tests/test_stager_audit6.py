"""The stager against outages and races (sixth audit): a recall whose pin lapsed while no stager
polled it (the stager killed, or the database away, longer than the pin) is asked again, not
failed for good; a bring-online whose request was cancelled before the stager or worker could
record it is released, not left pinned for its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.daemons import DaemonProcesses, daemon_env
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    put_files,
    run_until_drained,
    se_root,
    tape_lock_held,
    tape_se,
)
from transfers import cancellation, queueing
from transfers import requests as rq
from transfers import stager as stager_module
from transfers.stager import Stager
from transfers.worker import TransferWorker

# A poll every 1.5 s, a pin of 3 s: the stager is killed after the staging and before its poll,
# and stays away longer than the pin.
TIMINGS = {"lease_s": 2, "stage_poll_s": 1.5, "pin_lifetime_s": 3, "idle_sleep_s": 0.1, "retry_base_s": 0.2}


def _tape_records(cache: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in (cache / "requests").glob("*.json")]


async def _until(check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_recall_whose_pin_lapsed_while_the_stager_was_killed_is_asked_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape, dst = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.3), disk_se("DST", tmp_path / "dst")
    await add_ses(database, tape, dst)
    contents = await put_files(database, [tape], ["/vo/raw/staged", "/vo/raw/copied"])
    await queueing.submit(database, "stage", [{"lfn": "/vo/raw/staged", "dest_se": "TAPE"}], requester="t")
    await queueing.submit_transfers(database, [{"lfn": "/vo/raw/copied", "dest_se": "DST"}], requester="t")
    fast = fast_settings(settings, **TIMINGS)
    (tmp_path / "logs").mkdir()
    stagers = DaemonProcesses("stager", daemon_env(settings, **TIMINGS), tmp_path / "logs")
    proc = stagers.start()
    try:
        async def stage_started() -> bool:
            return bool(await database[rq.REQUESTS].count_documents({"state": "staging"}))
        await _until(stage_started, 20)
        await TransferWorker(fast, database).run(max_cycles=1)  # the transfer parked in staging too

        async def both_online() -> bool:
            records = _tape_records(tmp_path / "t" / "cache")
            return len(records) == 2 and all(set(r["files"].values()) == {"online"} for r in records)  # type: ignore
        await _until(both_online, 20)
        staging = await database[rq.REQUESTS].count_documents({"state": "staging"})
        assert staging == 2, "the stager saw the files online before it was killed: no outage to test"
        stagers.kill(proc)
        await asyncio.sleep(4)  # the outage outlasts the pins
        stagers.start()
        await run_until_drained(database, TransferWorker(fast, database), timeout_s=60)
    finally:
        stagers.stop_all()
    requests = {r["lfn"]: r for r in await database[rq.REQUESTS].find({}).to_list()}
    assert {lfn: r["state"] for lfn, r in requests.items()} == {"/vo/raw/staged": "done", "/vo/raw/copied": "done"}, \
        [(r["state"], r["last_error"]) for r in requests.values()]
    assert (se_root(dst) / "vo/raw/copied").read_bytes() == contents["/vo/raw/copied"]


def _pinned(cache: Path) -> list[dict[str, float]]:
    """The live pins on the tape's staged copies."""
    return [pins for p in (cache / "pins").glob("*.json") if (pins := {
        k: v for k, v in json.loads(p.read_text())["pins"].items() if v > time.time()})]


async def test_a_stage_request_cancelled_while_its_recall_is_asked_leaves_no_pin(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.3)
    await add_ses(database, tape)
    await put_files(database, [tape], ["/vo/raw/f"])
    submitted = await queueing.submit(database, "stage", [{"lfn": "/vo/raw/f", "dest_se": "TAPE"}], requester="t")
    request_id = submitted["successful"]["/vo/raw/f"]
    stager = Stager(fast_settings(settings), database)
    cache = tmp_path / "t" / "cache"
    with tape_lock_held(cache):
        cycle = asyncio.create_task(stager.run_once())

        async def noted() -> bool:
            """The recall is noted on the request: the ask comes next (and waits for the drive).
            A cancel landing before the note leaves nothing to ask (that stager stops), as a
            loaded machine once showed while this waited only for the claim."""
            return bool(await database[rq.REQUESTS].count_documents(
                {"_id": request_id, "state": "active", "recall": {"$exists": True}}))
        await _until(noted, 10)
        assert await cancellation.cancel(database, {"_id": request_id}) == 1  # the user cancels meanwhile
    await cycle
    await stager.run(max_cycles=3)
    await asyncio.sleep(0.6)  # past the drive time: a recall still asked would be staged and pinned now
    assert [set(r["files"].values()) for r in _tape_records(cache)] == [{"released"}]
    assert _pinned(cache) == []


async def test_a_transfer_cancelled_while_parked_for_staging_leaves_no_pin(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape, dst = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.3), disk_se("DST", tmp_path / "dst")
    await add_ses(database, tape, dst)
    await put_files(database, [tape], ["/vo/raw/f"])
    submitted = await queueing.submit_transfers(database, [{"lfn": "/vo/raw/f", "dest_se": "DST"}], requester="t")
    request_id = submitted["successful"]["/vo/raw/f"]
    worker = TransferWorker(fast_settings(settings, settle_every_s=5), database)
    try:
        await worker.run_once()  # claimed, its recall asked, its parking not written yet
        assert await cancellation.cancel(database, {"_id": request_id}) == 1
        await worker.run_once()  # the parking is settled: the request is no longer this worker's
    finally:
        await worker.close()
    await asyncio.sleep(0.6)
    cache = tmp_path / "t" / "cache"
    assert [set(r["files"].values()) for r in _tape_records(cache)] == [{"released"}]
    assert _pinned(cache) == []


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "256k") -> Iterator[Path]:
    """A small tmpfs mounted at `where`."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")
async def test_a_release_on_a_tape_whose_cache_is_full_waits_and_others_go_on(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "full" / "cache") as full_cache:
        full, ok = tape_se("FULL", tmp_path / "full", stage_delay_s=0.1), tape_se("OK", tmp_path / "ok")
        await add_ses(database, full, ok)
        await put_files(database, [full, ok], ["/vo/raw/f"])
        fast = fast_settings(settings)
        for requester, se in (("alice", "FULL"), ("bob", "FULL"), ("carol", "OK")):
            # Two pins on FULL's copy, one after the other: releasing one rewrites the other's.
            await queueing.submit(database, "stage", [{"lfn": "/vo/raw/f", "dest_se": se}], requester=requester)
            await run_until_drained(database, Stager(fast, database), timeout_s=30)
        with (full_cache / "filler").open("wb") as out, contextlib.suppress(OSError):
            out.write(b"\0" * (1 << 20))  # FULL's cache fills up
        assert await cancellation.ask_release(database, {"requester": {"$in": ["alice", "carol"]}}) == 2
        stager = Stager(fast, database)
        for _ in range(3):
            await stager.run_once()  # raised the cache's OSError at every cycle, before any later release
        released = {r["requester"]: r["release"] for r in await database[rq.REQUESTS].find({"release": {
            "$exists": True}}).to_list()}
        assert released == {"alice": "asked", "carol": "released"}
        (full_cache / "filler").unlink()
        await stager.run_once()
        assert await database[rq.REQUESTS].count_documents({"release": "released"}) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")
async def test_releases_on_a_tape_whose_cache_is_full_do_not_hold_up_another_tapes(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "full" / "cache", size="8m") as full_cache:
        full, ok = tape_se("FULL", tmp_path / "full", stage_delay_s=0), tape_se("OK", tmp_path / "ok")
        await add_ses(database, full, ok)
        lfns = [f"/vo/raw/f{i:03d}" for i in range(stager_module.BATCH + 1)]
        await put_files(database, [full], lfns, size=16)
        await put_files(database, [ok], ["/vo/raw/ok"], size=16)
        fast = fast_settings(settings)
        for requester in ("alice", "bob"):  # two pins on each of FULL's copies: releasing one rewrites the other
            await queueing.submit(database, "stage", [{"lfn": lfn, "dest_se": "FULL"} for lfn in lfns],
                                  requester=requester)
            await run_until_drained(database, Stager(fast, database), timeout_s=60)
        await queueing.submit(database, "stage", [{"lfn": "/vo/raw/ok", "dest_se": "OK"}], requester="carol")
        await run_until_drained(database, Stager(fast, database), timeout_s=30)
        with (full_cache / "filler").open("wb") as out, contextlib.suppress(OSError):
            out.write(b"\\0" * (16 << 20))  # FULL's cache fills up
        assert await cancellation.ask_release(database, {"requester": {"$in": ["alice", "carol"]}}) == len(lfns) + 1
        stager = Stager(fast, database)
        for _ in range(3):
            await stager.run_once()
        carol = await database[rq.REQUESTS].find_one({"requester": "carol"})
        assert carol is not None and carol["release"] == "released"
        assert await database[rq.REQUESTS].count_documents({"release": "asked"}) == len(lfns)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")
async def test_a_recall_that_meets_a_full_tape_cache_waits_for_room_and_leaves_no_partial_copy(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "t" / "cache", size="512k") as cache:
        tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.1)
        await add_ses(database, tape)
        await put_files(database, [tape], ["/vo/raw/big"], size=400 * 1024)
        filler = cache / "filler"
        filler.write_bytes(b"\0" * (256 * 1024))  # room for the request's record, not for the file
        await queueing.submit(database, "stage", [{"lfn": "/vo/raw/big", "dest_se": "TAPE"}], requester="t")
        stager = Stager(fast_settings(settings), database)
        for _ in range(5):
            await stager.run_once()
            await asyncio.sleep(0.2)
        waiting = await database[rq.REQUESTS].find_one({})
        assert waiting is not None and waiting["state"] == "staging", waiting
        assert [p.name for p in (cache / "files").rglob("*") if p.is_file()] == []  # no partial copy left
        filler.unlink()  # room again
        await run_until_drained(database, stager, timeout_s=30)
        done = await database[rq.REQUESTS].find_one({})
        assert done is not None and done["state"] == "done", done
