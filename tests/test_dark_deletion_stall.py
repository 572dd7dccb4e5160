"""A dark file is deleted only while the reaper surely holds its request's lease.

Before, a reaper frozen (a stopped process, a paused VM) after its checks that the file is still
dark and before the storage call resumed after another reaper had taken the request over and
deleted the dark file, and a new file had been registered at the path: it deleted the new file's
bytes. The dark file's date does not stop it: a file's date is the storage's clock (another
machine's, which may be behind), or one a copy kept, and can be older than the run's start."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import zlib
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import freeze_at_first_call
from tests.fixtures.transfers import add_ses, dark_run, disk_se, fast_settings, write_bytes
from transfers import audit_runs
from transfers.auditor import request_dark_deletion
from transfers.reaper import Reaper

LEASE_S = 1.0


def _frozen_reaper(settings: Settings, stalled: threading.Event, thaw: threading.Event) -> None:
    """One reaper cycle in its own thread and loop, frozen as it reads the run (after the file was
    found still dark, before its date is read and its bytes deleted) until `thaw`."""
    async def cycle() -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
        try:
            await Reaper(fast_settings(settings, lease_s=LEASE_S), client[settings.database]).run(max_cycles=1)
        finally:
            await client.close()

    sys.setprofile(freeze_at_first_call(audit_runs.get_run.__code__, stalled, thaw))
    try:
        asyncio.run(cycle())
    finally:
        sys.setprofile(None)


async def test_a_reaper_frozen_before_deleting_a_dark_file_spares_a_file_registered_there_since(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    se = disk_se("DARK", tmp_path / "dark")
    await add_ses(database, se)
    lfn = "/vo/stall/x"
    write_bytes(se, lfn, b"nobody registered me")
    run_id = await dark_run(database, "DARK", [lfn])
    await request_dark_deletion(database, run_id, requester="admin")
    stalled, thaw = threading.Event(), threading.Event()
    thread = threading.Thread(target=_frozen_reaper, args=(settings, stalled, thaw))
    thread.start()
    try:
        assert await asyncio.to_thread(stalled.wait, 30), "the first reaper never reached the dark file"
        await asyncio.sleep(LEASE_S * 1.5)  # its lease runs out: another reaper takes the request over
        await Reaper(fast_settings(settings, lease_s=LEASE_S), database).run(max_cycles=1)
        assert {e["clean"] async for e in audit_runs.entries(database, run_id, "dark")} == {"deleted"}
        new = b"a new file's own bytes"
        path = write_bytes(se, lfn, new)
        dated = time.time() - 3600  # copied with its times kept, or by a storage whose clock is behind
        os.utime(path, (dated, dated))
        row = {"lfn": lfn, "size": len(new), "adler32": f"{zlib.adler32(new):08x}", "replicas": [{"se": "DARK"}]}
        assert lfn in (await register_files(database, ADMIN, [row]))["successful"]
    finally:
        thaw.set()
        await asyncio.to_thread(thread.join, 30)
    assert path.exists() and path.read_bytes() == new  # before: deleted by the reaper that resumed


async def test_a_dark_files_deletion_once_recorded_is_not_written_over_by_a_late_reaper(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    """The successor deleted the dark file and recorded it; the stalled reaper, resuming before
    its checks, finds the path gone or a file registered there since: its "gone" or "kept" must
    not replace what became of the dark file."""
    se = disk_se("DISK", tmp_path / "disk")
    await add_ses(database, se)
    run_id = await dark_run(database, se.name, ["/vo/dark/a"])
    await audit_runs.allow_cleaning(database, run_id)
    await audit_runs.cleaned(database, run_id, "/vo/dark/a", "deleted")
    for late in ("gone", "kept: registered since"):
        await audit_runs.cleaned(database, run_id, "/vo/dark/a", late)
    assert {e["clean"] async for e in audit_runs.entries(database, run_id, "dark")} == {"deleted"}
