"""A holder that stalls past its lease: `kernel.lease.check_held` stops its work before a write
that only a holder may make. A reaper frozen between reading its removal tokens and counting them,
while a successor removes the same replicas (counting and forgetting the tokens), counts nothing
when it resumes: the SEs' usage stays exact. Frozen later still, its count already checked and on
its way to the database, the removals' fence (`catalogue.usage.count_removals`) refuses it."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage as usage_module
from catalogue.replica_removal import remove_retired
from catalogue.usage import count_removals, rebuild, se_usage
from kernel import lease
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import add_ses, disk_se, put_files
from transfers.deletion import retire

LEASE_S = 1.0  # the immediate checks have 0.75 s to run: ample on a loaded machine


async def _kept() -> bool:
    return True


async def _checked_after(stall_s: float, *, blocking: bool) -> str:
    if blocking:
        time.sleep(stall_s)  # noqa: ASYNC251 -- the whole process stalls: no renewal runs either
    else:
        await asyncio.sleep(stall_s)
    lease.check_held()
    return "written"


async def test_work_stops_once_its_lease_was_not_renewed_for_most_of_its_length() -> None:
    lease.check_held()  # outside work run under a lease: nothing to check
    assert await lease.while_held(_checked_after(0, blocking=True), _kept, every_s=60,
                                  lease_s=LEASE_S) == (True, "written")
    assert await lease.while_held(_checked_after(LEASE_S, blocking=True), _kept, every_s=LEASE_S / 8,
                                  lease_s=LEASE_S) == (False, None)
    # Renewed every eighth of the lease while it waits: held throughout.
    assert await lease.while_held(_checked_after(2 * LEASE_S, blocking=False), _kept, every_s=LEASE_S / 8,
                                  lease_s=LEASE_S) == (True, "written")
    # Taken a whole lease before the work began: over already.
    assert await lease.while_held(_checked_after(0, blocking=True), _kept, every_s=60, lease_s=LEASE_S,
                                  since=time.monotonic() - LEASE_S) == (False, None)
    # Without lease_s the work is not checked (the callers that count nothing).
    assert await lease.while_held(_checked_after(LEASE_S, blocking=True), _kept,
                                  every_s=60) == (True, "written")


def _stall_at_first_call(code: Any, stalled: threading.Event, thaw: threading.Event) -> Any:
    """A profile function that stalls its thread the first time `code` runs (a frozen process)."""

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is code and not stalled.is_set():
            stalled.set()
            thaw.wait(30)

    return profile


async def _stalled_removal_and_its_successor(database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
                                             frozen_at: Any, lease_s: float) -> tuple[bool, Any]:
    """Four retired replicas on GONE: a reaper in another thread (its own client and loop, as
    another process) is frozen the first time it runs `frozen_at`; a successor removes the same
    replicas (count, pull, forget); then the first resumes. Checks what must hold whatever the
    first did, and returns what its `while_held` gave."""
    keep, gone = disk_se("KEEP", tmp_path / "keep"), disk_se("GONE", tmp_path / "gone")
    await add_ses(database, keep, gone)
    lfns = [f"/vo/stall/f{i}" for i in range(4)]
    await put_files(database, [keep, gone], lfns, size=100)
    for lfn in lfns:
        assert await retire(database, lfn, "GONE", allow_last=False)
    targets = [(lfn, "GONE") for lfn in lfns]
    stalled, thaw = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def stalled_reaper() -> None:
        async def hold() -> tuple[bool, Any]:
            client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
            try:
                return await lease.while_held(remove_retired(client[settings.database], targets), _kept,
                                              every_s=60, lease_s=lease_s)
            finally:
                await client.close()

        sys.setprofile(_stall_at_first_call(frozen_at, stalled, thaw))
        try:
            outcome["held"] = asyncio.run(hold())
        finally:
            sys.setprofile(None)

    thread = threading.Thread(target=stalled_reaper)
    thread.start()
    try:
        assert await asyncio.to_thread(stalled.wait, 30), "the first reaper never reached the point to freeze at"
        await asyncio.sleep(min(lease_s, LEASE_S))  # a short lease runs out; a successor takes the requests over
        assert await remove_retired(database, targets) == set(targets)
    finally:
        thaw.set()
        await asyncio.to_thread(thread.join, 30)
    usage = {row["se"]: (row["replicas"], row["bytes"]) for row in await se_usage(database)}
    assert usage.get("GONE", (0, 0)) == (0, 0) and usage["KEEP"] == (4, 400)
    report = await rebuild(database, fix=False)
    assert report["drifted"] == 0, report["drift"]
    files = await database["files"].find({"_id": {"$in": lfns}}, {"replicas.se": 1}).to_list()
    assert sorted(r["se"] for f in files for r in f["replicas"]) == ["KEEP"] * 4
    return outcome["held"]


async def test_a_removal_resumed_after_its_successor_finished_counts_nothing(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """Frozen as it begins counting, past its lease: `check_held` stops it."""
    held = await _stalled_removal_and_its_successor(database, settings, tmp_path, count_removals.__code__, LEASE_S)
    assert held == (False, None)


async def test_a_count_frozen_on_its_way_to_the_database_counts_nothing_after_its_successor(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """Frozen after `check_held` passed (a long lease), with its write about to be sent: the
    removals' fence refuses the write, and it reads again to find its replicas gone."""
    held = await _stalled_removal_and_its_successor(database, settings, tmp_path, usage_module._apply_removals.__code__,
                                                    60.0)
    assert held == (True, set())
