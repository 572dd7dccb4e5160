"""The reaper against an SE outage (sixth audit): the replicas an eviction retired and could not
delete (the SE refused connections) are finished by a later eviction once their deletion is
abandoned (they stayed `unavailable` for ever, their bytes on the SE and in its usage, since an
eviction only chose `available` replicas); a deletion request whose replica is retired is retried
until the SE is back (it failed for good after its few attempts, the replica left retired)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_xrootd import XRootDServer
from catalogue.replica_removal import REMOVAL_HORIZON_S
from catalogue.replicas import add_replicas
from catalogue.storage_elements import Protocol, Space, StorageElement
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.tcp_gate import TcpGate
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, replica_status, run_until_drained
from tests.fixtures.xrootd import data_file
from transfers import queueing
from transfers import requests as rq
from transfers.reaper import Reaper, used_bytes

KIB = 1024


async def test_replicas_an_eviction_retired_while_the_se_was_down_are_deleted_later(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, xrootd: XRootDServer, xrootd_path: str,
) -> None:
    gate = TcpGate(xrootd.http_port)
    await gate.open()
    full = StorageElement(name="FULL", site="X", protocols=[
        Protocol(scheme="http", host="127.0.0.1", port=gate.port, prefix=xrootd_path)],
        space=Space(total_bytes=10 * KIB, high_water=0.9, low_water=0.5))
    other = disk_se("OTHER", tmp_path / "other")
    await add_ses(database, full, other)
    lfns = [f"/vo/f{i}" for i in range(10)]
    contents = await put_files(database, [other], lfns, size=KIB)
    owner = xrootd.data_dir.stat()
    for lfn, data in contents.items():  # FULL's bytes, the server's to delete
        path = data_file(xrootd, f"{xrootd_path}{lfn}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        for made in (path, path.parent, path.parent.parent):
            os.chown(made, owner.st_uid, owner.st_gid)
    assert not (await add_replicas(database, [{"lfn": lfn, "se": "FULL"} for lfn in lfns]))["failed"]
    await gate.close()  # FULL is down while it is cleaned
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    retired = [lfn for lfn in lfns if await replica_status(database, lfn, "FULL") == "unavailable"]
    assert len(retired) == 5 and all(data_file(xrootd, f"{xrootd_path}{lfn}").exists() for lfn in retired)
    await gate.open()
    # Their deletion is abandoned once its mark is older than the removal horizon.
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=REMOVAL_HORIZON_S + 60)
    for lfn in retired:
        await database["files"].update_one({"_id": lfn, "replicas.1.se": "FULL"},
                                           {"$set": {"replicas.1.modified": long_ago}})
    try:
        await Reaper(fast_settings(settings), database).run(max_cycles=1)
    finally:
        await gate.close()
    statuses = {lfn: await replica_status(database, lfn, "FULL") for lfn in lfns}
    assert [lfn for lfn, status in statuses.items() if status == "unavailable"] == []
    assert not any(data_file(xrootd, f"{xrootd_path}{lfn}").exists() for lfn in retired)
    kept = [lfn for lfn, status in statuses.items() if status == "available"]
    assert await used_bytes(database, "FULL") == len(kept) * KIB <= 5 * KIB


async def test_a_deletion_request_outlasts_an_se_outage_longer_than_its_attempts(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, xrootd: XRootDServer, xrootd_path: str,
) -> None:
    gate = TcpGate(xrootd.http_port)
    full = StorageElement(name="XRD", site="X", protocols=[
        Protocol(scheme="http", host="127.0.0.1", port=gate.port, prefix=xrootd_path)])
    other = disk_se("OTHER", tmp_path / "other")
    await add_ses(database, full, other)
    contents = await put_files(database, [other], ["/vo/f"], size=KIB)
    owner = xrootd.data_dir.stat()
    path = data_file(xrootd, f"{xrootd_path}/vo/f")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(contents["/vo/f"])
    for made in (path, path.parent, path.parent.parent):
        os.chown(made, owner.st_uid, owner.st_gid)
    assert not (await add_replicas(database, [{"lfn": "/vo/f", "se": "XRD"}]))["failed"]
    await queueing.submit(database, "delete", [{"lfn": "/vo/f", "dest_se": "XRD"}], requester="t")
    reaper = Reaper(fast_settings(settings, retry_base_s=0.2, retry_cap_s=0.5), database)

    async def back_after(delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await gate.open()

    reopen = asyncio.create_task(back_after(5.0))  # 5 attempts take about 2 s
    try:
        await run_until_drained(database, reaper, timeout_s=30)
    finally:
        await reopen
        await gate.close()
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None and request["state"] == "done", (request["state"], request["last_error"])
    assert request["attempts"] > 5
    assert await replica_status(database, "/vo/f", "XRD") is None and not path.exists()
