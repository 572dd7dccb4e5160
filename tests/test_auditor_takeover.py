"""An auditor that stalls past its lease (a frozen process) while another takes its run over and
ends it changes nothing of the run when it resumes: neither its stale counters nor its entries
(`transfers.audit_runs`: each start of a run is an attempt, and every write names its attempt)."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.audit import audit_settings
from tests.fixtures.transfers import add_ses, disk_se, se_root, write_bytes
from transfers import audit_runs
from transfers.auditor import Auditor

LEASE_S = 1.0


def _stall_at_first_call(code: Any, stalled: threading.Event, thaw: threading.Event) -> Any:
    """A profile function that stalls its thread the first time `code` runs (a frozen process)."""

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is code and not stalled.is_set():
            stalled.set()
            thaw.wait(30)

    return profile


async def test_a_stalled_auditor_whose_run_was_taken_over_leaves_the_successors_findings(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    se = disk_se("AUD", tmp_path / "aud")
    await add_ses(database, se)
    dark = write_bytes(se, "/vo/dark/f", b"left behind")  # on storage, not in the catalogue
    run = await audit_runs.queue_run(database, "AUD", requester="t")
    fast = audit_settings(settings, lease_s=LEASE_S, dark_grace_s=0.0)
    stalled, thaw = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def stalled_auditor() -> None:
        """The first auditor, in another thread (its own client and loop, as another process),
        frozen as it records what it found: the dark file."""
        async def audit_once() -> int:
            client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
            try:
                auditor = Auditor(fast, client[settings.database])
                auditor.worker = "auditor@stalled"
                return await auditor.run_once()
            finally:
                await client.close()

        sys.setprofile(_stall_at_first_call(audit_runs.add_entries.__code__, stalled, thaw))
        try:
            outcome["done"] = asyncio.run(audit_once())
        finally:
            sys.setprofile(None)

    thread = threading.Thread(target=stalled_auditor)
    thread.start()
    try:
        assert await asyncio.to_thread(stalled.wait, 30), "the first auditor never recorded its findings"
        await asyncio.sleep(LEASE_S * 1.2)  # its lease runs out
        dark.unlink()  # cleaned by hand meanwhile: the successor finds nothing dark
        successor = Auditor(fast, database)
        successor.worker = "auditor@successor"
        assert await successor.run_once() == 1
        taken = await audit_runs.get_run(database, str(run["_id"]))
        assert (taken["state"], taken["counts"].get("dark")) == ("done", 0)
    finally:
        thaw.set()
        await asyncio.to_thread(thread.join, 30)
    assert not (se_root(se) / "vo/dark/f").exists()
    ended = await audit_runs.get_run(database, str(run["_id"]))
    assert (ended["state"], ended["counts"].get("dark"), ended["finished"]) == ("done", 0, taken["finished"])
    assert [e async for e in audit_runs.entries(database, str(run["_id"]), None)] == []
    assert await audit_runs.dark_lfns(database, str(run["_id"])) == []
