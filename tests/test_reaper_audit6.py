"""The reaper's space cleanup against an SE outage (sixth audit): the replicas an eviction retired
and could not delete (the SE refused connections) are finished by a later eviction once their
deletion is abandoned; they stayed `unavailable` for ever, their bytes on the SE and in its usage,
since an eviction only chose `available` replicas."""

from __future__ import annotations

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
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, replica_status
from tests.fixtures.xrootd import data_file
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
