"""Reliability of the transfer daemons against real failures: worker processes SIGKILLed and
restarted mid-work, a destination SE that refuses connections for a while, a corrupted source on
an XRootD server, and several workers sharing one queue. Bounded in count and time."""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_xrootd import XRootDServer
from catalogue.files import register_files
from catalogue.storage_elements import Protocol, StorageElement
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.daemons import DaemonProcesses, daemon_env, drain_while_killing
from tests.fixtures.tcp_gate import TcpGate
from tests.fixtures.transfers import (
    add_ses,
    copying_replicas,
    disk_se,
    fast_settings,
    open_requests,
    put_files,
    replica_status,
    run_until_drained,
    se_root,
)
from tests.fixtures.xrootd import data_file
from transfers import queueing
from transfers import requests as rq
from transfers.worker import TransferWorker

pytestmark = pytest.mark.slow

# Small per-worker limits: a killed worker strands only what it held until its leases run out.
# Leases of 6 s: FerretDB's locked writes took up to 2 s here under load, and with 3 s a live
# worker lost leases mid-copy, so the file was copied a second time by whoever took over.
FAST = {"lease_s": 6, "retry_base_s": 0.2, "retry_cap_s": 2, "idle_sleep_s": 0.2, "global_limit": 8, "prefetch": 4}


# The size: 500 transfers while workers are killed. On the patched FerretDB (guarded
# writes by _id pushed down, see .ci/install-ferretdb) 500 on disk drain in 8-20 s here, so
# kills on a clock alone were sometimes too few to mean anything; they follow the progress too.
KILL_TEST_TRANSFERS = int(os.environ.get("CAIRN_TEST_KILL_TRANSFERS", "500"))
KILL_TEST_TIMEOUT_S = float(os.environ.get("CAIRN_TEST_KILL_TIMEOUT_S", "300"))
XROOTD_KILL_TEST_TRANSFERS = int(os.environ.get("CAIRN_TEST_XROOTD_KILL_TRANSFERS", "500"))


def adler32_of(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()):08x}"


async def wait_drained(db: AsyncDatabase[Document], timeout_s: float, workers: DaemonProcesses) -> None:
    deadline = time.monotonic() + timeout_s
    while await open_requests(db):
        if time.monotonic() > deadline:
            raise AssertionError(f"requests still open after {timeout_s}s; worker logs:\n{workers.logs()}")
        await asyncio.sleep(0.5)


async def test_transfers_survive_workers_killed_every_few_seconds(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    lfns = [f"/vo/kill/f{i:03d}" for i in range(KILL_TEST_TRANSFERS)]
    contents = await put_files(database, [src], lfns, size=4096)
    await drain_while_killing_workers(database, settings, tmp_path, lfns, "DST")
    for lfn in lfns:
        assert adler32_of(se_root(dst) / lfn.lstrip("/")) == f"{zlib.adler32(contents[lfn]):08x}"
    files = await database["files"].find({"_id": {"$in": lfns}}, {"replicas": 1}).to_list()
    assert all(sorted(r["se"] for r in f["replicas"]) == ["DST", "SRC"] for f in files)


async def test_copies_between_xrootd_servers_survive_workers_killed_every_few_seconds(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
    xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_path: str,
) -> None:
    """The same on root:// with third-party copy, where small files are copied by the worker's
    own XRootD client (`storage_plugins.xrdcl_copy`): a worker killed mid-copy leaves a partial
    file that the next copy overwrites, and never a request done twice or a replica lost."""
    first, second = xrootd_pair
    ses = [StorageElement(name=name, site="X", protocols=[Protocol(
        scheme="root", host="127.0.0.1", port=server.root_port, prefix=xrootd_path, third_party_copy=True)])
        for name, server in (("XSRC", first), ("XDST", second))]
    await add_ses(database, *ses)
    lfns = [f"/vo/xkill/f{i:03d}" for i in range(XROOTD_KILL_TEST_TRANSFERS)]
    contents = {lfn: os.urandom(4096 + i) for i, lfn in enumerate(lfns)}
    for lfn, data in contents.items():
        path = data_file(first, f"{xrootd_path}{lfn}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    result = await register_files(database, ADMIN, [
        {"lfn": lfn, "size": len(data), "adler32": f"{zlib.adler32(data):08x}", "replicas": [{"se": "XSRC"}]}
        for lfn, data in contents.items()])
    assert not result["failed"]
    await drain_while_killing_workers(database, settings, tmp_path, lfns, "XDST")
    results = [d["result"] for d in await database[rq.REQUESTS].find({}, {"result": 1}).to_list()]
    # Copied by XrdCl, or found copied already (a killed worker's copy, made available before it
    # could end the request).
    copied = [r for r in results if not r.get("already_there")]
    assert {(r["mode"], r["protocol"]) for r in copied} == {("stream", "root")} and len(copied) > len(lfns) // 2
    for lfn, data in contents.items():  # on the destination server's disk, not through Cairn
        assert data_file(second, f"{xrootd_path}{lfn}").read_bytes() == data


async def drain_while_killing_workers(database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
                                      lfns: list[str], dest_se: str) -> None:
    """Copy lfns to dest_se with three worker processes, one SIGKILLed (and another started) at
    every sixth of the work and every 0.5-1.5 s; then every request is done with exactly one
    copy, every replica available."""
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": dest_se} for lfn in lfns], requester="t")
    (tmp_path / "logs").mkdir()
    workers = DaemonProcesses("transfers", daemon_env(settings, **FAST), tmp_path / "logs")
    try:
        for _ in range(3):
            workers.start()
        await drain_while_killing(workers, lambda: open_requests(database), kills=5, seed=6,
                                  timeout_s=KILL_TEST_TIMEOUT_S)
    finally:
        workers.stop_all()
    assert workers.killed >= 5, "the workers finished before enough of them were killed to mean anything"
    docs = await database[rq.REQUESTS].find({}).to_list()
    assert len(docs) == len(lfns) and {d["state"] for d in docs} == {"done"}
    assert sorted(d["lfn"] for d in docs) == lfns
    assert [(d["lfn"], d.get("copies")) for d in docs if d.get("copies") != 1] == []
    assert await copying_replicas(database) == []
    for lfn in lfns:
        assert await replica_status(database, lfn, dest_se) == "available"


async def test_three_workers_on_one_queue_copy_each_file_once(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    src, dst = disk_se("SRC", tmp_path / "src"), disk_se("DST", tmp_path / "dst")
    await add_ses(database, src, dst)
    lfns = [f"/vo/three/f{i:03d}" for i in range(200)]
    await put_files(database, [src], lfns, size=2048)
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "DST"} for lfn in lfns], requester="t")
    (tmp_path / "logs").mkdir()
    workers = DaemonProcesses("transfers", daemon_env(settings, **{**FAST, "lease_s": 20}), tmp_path / "logs")
    try:
        for _ in range(3):
            workers.start()
        await wait_drained(database, 120, workers)
    finally:
        workers.stop_all()
    docs = await database[rq.REQUESTS].find({}).to_list()
    assert {d["state"] for d in docs} == {"done"}
    # Each finished copy of a request's bytes is counted on the request, whoever made it.
    assert [d["lfn"] for d in docs if d.get("copies") != 1] == []
    # The work was shared: more than one worker completed requests.
    assert len({d["started"] for d in docs}) > 1
    assert await copying_replicas(database) == []


async def test_a_destination_that_refuses_connections_is_retried_until_it_is_back(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, xrootd: XRootDServer, xrootd_path: str,
) -> None:
    gate = TcpGate(xrootd.http_port)
    src = disk_se("SRC", tmp_path / "src")
    dst = StorageElement(name="XRD", site="X", protocols=[
        Protocol(scheme="http", host="127.0.0.1", port=gate.port, prefix=xrootd_path)])
    await add_ses(database, src, dst)
    lfns = [f"/vo/down/f{i}" for i in range(5)]
    contents = await put_files(database, [src], lfns, size=10_000)
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "XRD"} for lfn in lfns], requester="t")
    worker = TransferWorker(fast_settings(settings, retry_base_s=0.3, retry_cap_s=1.0), database)

    async def back_after(delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await gate.open()

    reopen = asyncio.create_task(back_after(3.0))
    try:
        await run_until_drained(database, worker, timeout_s=60)
    finally:
        await reopen
        await gate.close()
    docs = await database[rq.REQUESTS].find({}).to_list()
    assert {d["state"] for d in docs} == {"done"}
    assert all(d["attempts"] > 1 for d in docs), [d["attempts"] for d in docs]
    for lfn in lfns:
        path = data_file(xrootd, f"{xrootd_path}{lfn}")
        assert path.read_bytes() == contents[lfn]
        assert await replica_status(database, lfn, "XRD") == "available"
    stats = await database["link_stats"].find_one({"_id": "SRC>XRD"})
    assert stats is not None and stats["failures"]["storage_unavailable"] >= 5 and stats["done"] == 5


async def test_a_corrupt_source_on_xrootd_is_marked_bad_and_the_copy_comes_from_another(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
    xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_path: str,
) -> None:
    first, second = xrootd_pair

    def xrd_se(name: str, server: XRootDServer) -> StorageElement:
        return StorageElement(name=name, site="X", protocols=[Protocol(
            scheme="root", host="127.0.0.1", port=server.root_port, prefix=xrootd_path, third_party_copy=True)])

    corrupt, dest, spare = xrd_se("XRD-A", first), xrd_se("XRD-B", second), disk_se("SPARE", tmp_path / "spare")
    spare.site = "ELSEWHERE"  # the XRootD source (same site, TPC) is ranked first
    await add_ses(database, corrupt, dest, spare)
    data = b"physics" * 5000
    lfn = "/vo/corrupt/f"
    good = f"{zlib.adler32(data):08x}"
    path = data_file(first, f"{xrootd_path}{lfn}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"X" * len(data))
    (se_root(spare) / "vo/corrupt").mkdir(parents=True)
    (se_root(spare) / "vo/corrupt/f").write_bytes(data)
    await register_files(database, ADMIN, [{"lfn": lfn, "size": len(data), "adler32": good,
                                            "replicas": [{"se": "XRD-A"}, {"se": "SPARE"}]}])
    await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": "XRD-B"}], requester="t")
    await run_until_drained(database, TransferWorker(fast_settings(settings), database), timeout_s=60)
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "done" and request["result"]["source_se"] == "SPARE"
    assert request["failed_sources"] == ["XRD-A"]
    assert await replica_status(database, lfn, "XRD-A") == "bad"
    assert await replica_status(database, lfn, "XRD-B") == "available"
    assert adler32_of(data_file(second, f"{xrootd_path}{lfn}")) == good
    stats = await database["link_stats"].find_one({"_id": "XRD-A>XRD-B"})
    assert stats is not None and stats["failures"] == {"checksum_mismatch": 1}
