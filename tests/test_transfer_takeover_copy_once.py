"""A worker killed after its copy landed whole at the destination, before it confirmed the
replica: the worker taking its request over finds the bytes there (the catalogue's size and
adler32) and makes the replica available without copying them again; bytes that are not whole
are copied again."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    put_files,
    replica_status,
    run_until_drained,
    write_bytes,
)
from transfers import queueing
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.destination import register_copying
from transfers.worker import TransferWorker


async def _killed_after_copy(db: AsyncDatabase[Document], tmp_path: Path, landed: bytes | None) -> tuple[Path, bytes]:
    """A request whose worker registered its replica `copying`, wrote `landed` (the file's own
    bytes when None) at the destination, and died with a lease that has run out."""
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(db, src, dst)
    data = (await put_files(db, [src], ["/vo/f"], size=4096))["/vo/f"]
    await queueing.submit_transfers(db, [{"lfn": "/vo/f", "dest_se": "DST"}], requester="t")
    claimed = await rc.claim(db, "dead-worker", kinds=["transfer"], lease_s=0.5)
    assert claimed is not None
    assert await register_copying(db, "/vo/f", dst) == "copying"
    await rq.flag_copying_replica(db, claimed["_id"])
    path = write_bytes(dst, "/vo/f", data if landed is None else landed)
    await asyncio.sleep(1)  # its lease runs out
    return path, data


async def test_a_copy_that_landed_before_its_worker_died_is_not_made_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    path, data = await _killed_after_copy(database, tmp_path, None)
    inode = path.stat().st_ino
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    assert path.stat().st_ino == inode, "the bytes were copied a second time"
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None and request["state"] == "done" and request["copies"] == 1
    assert "copying_replica" not in request
    assert await replica_status(database, "/vo/f", "DST") == "available"
    assert path.read_bytes() == data


async def test_bytes_left_torn_by_a_dead_worker_are_copied_again(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    path, data = await _killed_after_copy(database, tmp_path, b"torn")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database))
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None and request["state"] == "done" and request["copies"] == 1
    assert await replica_status(database, "/vo/f", "DST") == "available"
    assert f"{zlib.adler32(path.read_bytes()):08x}" == f"{zlib.adler32(data):08x}"
