"""End to end: the `cairn server` process an upload talks to is SIGKILLed in the middle of a
`cairn upload` of many files and started again two seconds later on the same port. The command
waits for it (`kernel.ride_out`: each of an upload's calls is safe to send again) and finishes:
every file uploaded, its bytes checked on the SE's disk, no `copying` replica left, usage exact.
Before, every file in flight failed, and an undo that met the dead server left its replica held."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port
from cairn.sdk import Client
from catalogue import usage
from catalogue.files import FILES
from kernel.db import Document
from kernel.errors import ServiceUnavailable
from kernel.process import stop_processes
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.api_process import start_api_process
from tests.fixtures.cli import ROOT
from tests.fixtures.live_ses import LiveSEs

pytestmark = pytest.mark.slow

COUNT = 600  # two batches: a registration and a flip each
SIZE = 64 << 10


async def _copying(db: AsyncDatabase[Document], se: str) -> int:
    docs = await db[FILES].find({"_id": {"$regex": "^/cta/ride/"}}, {"replicas": 1}).to_list()
    return sum(1 for d in docs for r in d["replicas"] if r["se"] == se and r["status"] == "copying")


async def test_an_upload_rides_out_a_restart_of_its_api_server(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], settings: Settings,
    tmp_path: Path,
) -> None:
    se = await live_ses.add("file")
    source = tmp_path / "ride"
    source.mkdir()
    locals_ = [source / f"f{i:04d}" for i in range(COUNT)]
    for path in locals_:
        path.write_bytes(os.urandom(SIZE))
    port = free_port()
    server = await asyncio.to_thread(start_api_process, settings, port, tmp_path / "server.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({"PYTHONPATH": str(ROOT), "CAIRN_API_URL": f"http://127.0.0.1:{port}", "CAIRN_TOKEN": api.token()})
    command = [sys.executable, "-m", "cairn", "upload", *map(str, locals_), "/cta/ride/", "--se", se.name, "--json"]
    upload = await asyncio.to_thread(subprocess.Popen, command, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not await _copying(database, se.name):  # registered: bytes about to move
            assert upload.poll() is None and time.monotonic() < deadline, upload.stderr and upload.stderr.read()
            await asyncio.sleep(0.01)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        killed = time.monotonic()
        await asyncio.sleep(2)
        assert upload.poll() is None, "the upload ended while its server was down"
        server = await asyncio.to_thread(start_api_process, settings, port, tmp_path / "server.log")
        out, err = await asyncio.to_thread(upload.communicate, timeout=120)
    finally:
        upload.kill()
        stop_processes([server], timeout_s=15)
    print(f"upload finished {time.monotonic() - killed:.1f} s after its server's kill")
    assert upload.returncode == 0, err.decode()[-3000:]
    outcomes = json.loads(out)
    assert {o["status"] for o in outcomes} == {"uploaded"} and len(outcomes) == COUNT
    docs = {d["_id"]: d for d in await database[FILES].find({"_id": {"$regex": "^/cta/ride/"}}).to_list()}
    assert len(docs) == COUNT
    for path in locals_:
        lfn = f"/cta/ride/{path.name}"
        assert [(r["se"], r["status"]) for r in docs[lfn]["replicas"]] == [(se.name, "available")], lfn
        assert live_ses.stored_file(se.name, lfn).read_bytes() == path.read_bytes(), lfn  # on the SE's disk
    report = await usage.rebuild(database, fix=False)
    assert report["drifted"] == 0, report


async def test_a_flip_whose_answer_was_lost_is_read_back_as_this_uploads(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    se = await live_ses.add("file")
    locals_ = [tmp_path / f"f{i}" for i in range(3)]
    for path in locals_:
        path.write_bytes(os.urandom(1000))
    once = admin._request_once
    lost: list[str] = []

    async def answer_lost(method: str, path: str, **kw: Any) -> Any:
        answer = await once(method, path, **kw)
        if path == "/replicas/statuses" and not lost:  # done by the server; the connection broke on the way back
            lost.append(path)
            raise ServiceUnavailable("cannot reach the Cairn API: connection reset")
        return answer

    monkeypatch.setattr(admin, "_request_once", answer_lost)
    outcomes = await admin.upload(locals_, "/cta/lost/", se.name)
    assert lost and [(o.status, o.notes) for o in outcomes] == [("uploaded", [])] * 3, outcomes
