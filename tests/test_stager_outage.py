"""A tape system that is away is waited for, not taken for a refusal: a stage request whose
bring-online cannot be written (the disk cache full: "storage unavailable") goes back to the
queue with a backoff, and is staged once the cache has room again. Before, it failed for good
(and a raw OSError from the cache stopped the stager's whole cycle)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import add_ses, fast_settings, put_files, run_until_drained, tape_se
from transfers import queueing
from transfers import requests as rq
from transfers.stager import Stager

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")


@contextlib.contextmanager
def full_filesystem(where: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs at `where`, filled up; yields the file that fills it."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
    try:
        filler = where / "filler"
        with filler.open("wb") as out, contextlib.suppress(OSError):
            out.write(b"\0" * (1 << 20))
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_stage_request_waits_out_a_full_tape_cache_then_is_staged(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.2)
    await add_ses(database, tape)
    await put_files(database, [tape], ["/vo/raw/f"])
    fast = fast_settings(settings)
    with full_filesystem(tmp_path / "t" / "cache") as filler:
        await queueing.submit(database, "stage", [{"lfn": "/vo/raw/f", "dest_se": "TAPE"}], requester="t")
        stager = Stager(fast, database)
        for _ in range(3):
            await stager.run_once()
        request = await database[rq.REQUESTS].find_one({})
        assert request is not None and request["state"] == "queued", request
        assert "storage unavailable" in request["last_error"], request
        filler.unlink()  # the cache has room again
        await run_until_drained(database, Stager(fast, database), timeout_s=30)
        done = await database[rq.REQUESTS].find_one({})
        assert done is not None and done["state"] == "done", done
