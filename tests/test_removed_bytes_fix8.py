"""The bytes a forced removal left (`transfers.removed_bytes`): deleted only while the reaper
holds its request's lease, and retried on a short backoff instead of failing for good.

Before, a reaper frozen (a stopped process, a paused VM) after its request's check and before the
storage call resumed after another reaper had taken the request over, deleted the bytes and freed
the path, and a new file had been registered there: it deleted the new file's bytes. And a request
whose deletion kept failing gave up after its attempts; its path was refused to registrations until
the hold was queued again, an hour later."""

from __future__ import annotations

import asyncio
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files, remove_files
from catalogue.moved_paths import REMOVED_BEING_DELETED
from catalogue.storage_elements import put_storage_element
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.freezing import freeze_at_first_call
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, se_root, write_bytes
from transfers import deletion
from transfers import requests as rq
from transfers.reaper import Reaper
from transfers.removed_bytes import REQUESTER

LEASE_S = 1.0


def _row(lfn: str, data: bytes, se: str) -> dict[str, Any]:
    return {"lfn": lfn, "size": len(data), "adler32": f"{zlib.adler32(data):08x}", "replicas": [{"se": se}]}


async def test_a_reaper_frozen_before_deleting_removed_bytes_spares_a_new_file_there(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    quick = fast_settings(settings, lease_s=LEASE_S)
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    lost = 0
    for i in range(3):
        lfn = f"/vo/frozen/f{i}"
        await put_files(database, [a], [lfn], size=64)
        assert (await remove_files(database, ADMIN, [lfn], force=True))["successful"][lfn]["removed"]
        stalled, thaw = threading.Event(), threading.Event()

        def frozen_reaper(stalled: threading.Event, thaw: threading.Event) -> None:
            async def cycle() -> None:
                client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
                try:
                    await Reaper(quick, client[settings.database]).run(max_cycles=1)
                finally:
                    await client.close()

            sys.setprofile(freeze_at_first_call(deletion.delete_bytes.__code__, stalled, thaw))
            try:
                asyncio.run(cycle())
            finally:
                sys.setprofile(None)

        thread = threading.Thread(target=frozen_reaper, args=(stalled, thaw))
        thread.start()
        try:
            assert await asyncio.to_thread(stalled.wait, 30), "the first reaper never reached the deletion"
            await asyncio.sleep(LEASE_S * 1.5)  # its lease runs out: another reaper takes the request over
            await Reaper(quick, database).run(max_cycles=1)
            new = b"a new file's own bytes %d" % i
            path = write_bytes(a, lfn, new)
            assert lfn in (await register_files(database, ADMIN, [_row(lfn, new, "A")]))["successful"]
        finally:
            thaw.set()
            await asyncio.to_thread(thread.join, 30)
        lost += not path.exists()
    assert lost == 0  # before: 3 of 3 (the frozen reaper deleted the new file's bytes)


async def test_a_removed_files_bytes_that_cannot_be_deleted_are_retried_not_given_up(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    quick = fast_settings(settings, retry_base_s=0.01, retry_cap_s=0.05)
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    lfn = "/vo/stuck/f"
    await put_files(database, [a], [lfn], size=64)
    assert (await remove_files(database, ADMIN, [lfn], force=True))["successful"][lfn]["removed"]
    await put_storage_element(database, a.model_copy(update={"delete_enabled": False}))  # the SE refuses deletions
    reaper = Reaper(quick, database)
    for _ in range(3 * rq.DEFAULT_MAX_ATTEMPTS):  # past its attempts
        await reaper.run(max_cycles=1)
        await asyncio.sleep(0.06)
    request = await database[rq.REQUESTS].find_one({"requester": REQUESTER})
    assert request is not None and request["attempts"] > rq.DEFAULT_MAX_ATTEMPTS
    assert request["state"] == "queued" and "switched off" in request["last_error"]  # before: failed for good
    new = b"the next file"
    assert REMOVED_BEING_DELETED in (await register_files(database, ADMIN, [_row(lfn, new, "A")]))["failed"][lfn]
    await put_storage_element(database, a)  # the SE is back
    for _ in range(20):
        await reaper.run(max_cycles=1)
        if not (se_root(a) / lfn.lstrip("/")).exists():
            break
        await asyncio.sleep(0.06)
    assert not (se_root(a) / lfn.lstrip("/")).exists()  # before: kept, the path refused for an hour
    write_bytes(a, lfn, new)
    assert lfn in (await register_files(database, ADMIN, [_row(lfn, new, "A")]))["successful"]
