"""End to end: a `cairn upload` SIGKILLed while it writes to an XRootD SE leaves `copying` replicas,
founded records and bytes on the storage; once they have been silent for `abandoned_upload_s`, a
reaper process deletes the bytes (checked on the XRootD server's disk) and undoes the
registrations, the SE's usage stays exact, and the same upload run again succeeds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue import usage
from catalogue.files import FILES
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import ROOT
from tests.fixtures.daemons import DaemonProcesses, daemon_env
from tests.fixtures.live_ses import LiveSEs
from tests.test_abandoned_uploads import DAY, age

FILES_N = 24
SIZE = 4 << 20


def _upload(api: RunningApi, token: str, locals_: list[Path], se: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({"PYTHONPATH": str(ROOT), "CAIRN_API_URL": api.url, "CAIRN_TOKEN": token})
    return subprocess.Popen([sys.executable, "-m", "cairn", "upload", *map(str, locals_), "/cta/run/", "--se", se,
                             "--concurrency", "2", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


async def _statuses(db: AsyncDatabase[Document], se: str) -> dict[str, str]:
    docs = await db[FILES].find({"_id": {"$regex": "^/cta/run/"}}).to_list()
    return {d["_id"]: r["status"] for d in docs for r in d["replicas"] if r["se"] == se}


async def test_a_killed_uploads_bytes_and_records_are_undone_by_a_reaper_process(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], settings: Settings,
    tmp_path: Path,
) -> None:
    se, elsewhere = await live_ses.add("root"), await live_ses.add("file")
    source = tmp_path / "run"
    source.mkdir()
    locals_ = [source / f"f{i:02d}" for i in range(FILES_N)]
    for path in locals_:
        path.write_bytes(os.urandom(SIZE))
    token = api.token()  # an ordinary account's upload
    async with api.client(token) as alice:  # one file known already, on another SE: the upload adds a replica
        [known] = await alice.upload([locals_[0]], "/cta/run/f00", elsewhere.name)
        assert known.status == "uploaded", known

    process = await asyncio.to_thread(_upload, api, token, locals_, se.name)
    try:
        deadline = time.monotonic() + 60
        while sum(live_ses.stored_file(se.name, f"/cta/run/{p.name}").exists() for p in locals_) < 3:
            assert process.poll() is None, "the upload ended before it could be killed mid-way"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.communicate)
    left = await _statuses(database, se.name)
    copying = sorted(lfn for lfn, status in left.items() if status == "copying")
    assert len(copying) >= 3 and "/cta/run/f00" in copying, left
    written = [lfn for lfn in copying if live_ses.stored_file(se.name, lfn).exists()]
    assert written, "no bytes on storage to clean"

    await age(database, copying, se.name, 2 * DAY)  # a day and more later
    (tmp_path / "logs").mkdir()
    reaper = DaemonProcesses("reaper", daemon_env(settings, abandoned_upload_s=DAY, idle_sleep_s=0.2),
                             tmp_path / "logs")
    reaper.start()
    try:
        deadline = time.monotonic() + 60
        while any(status == "copying" for status in (await _statuses(database, se.name)).values()):
            assert time.monotonic() < deadline, reaper.logs()
            await asyncio.sleep(0.2)
    finally:
        reaper.stop_all()

    after = await _statuses(database, se.name)
    assert after == {lfn: status for lfn, status in left.items() if lfn not in copying}, after
    for lfn in copying:
        assert not live_ses.stored_file(se.name, lfn).exists(), lfn  # on the XRootD server's disk
    records = {d["_id"]: d for d in await database[FILES].find({"_id": {"$in": copying}}).to_list()}
    assert list(records) == ["/cta/run/f00"]  # the founded records went; the known file stays, as it was
    assert [(r["se"], r["status"]) for r in records["/cta/run/f00"]["replicas"]] == [(elsewhere.name, "available")]
    report = await usage.rebuild(database, fix=False)
    assert report["drifted"] == 0, report

    # The same command again, as its user runs it: for the files it names that fail, once more a
    # moment later. Here a day is a few seconds, and the XRootD server may still hold the files the
    # killed command had open (their checksum query fails, the upload undoes them).
    todo = locals_
    for _ in range(5):
        again = await asyncio.to_thread(_upload, api, token, todo, se.name)
        out, err = await asyncio.to_thread(again.communicate)
        outcomes = json.loads(out or b"[]")
        assert len(outcomes) == len(todo), err.decode()[-2000:]
        failed = [o for o in outcomes if o["status"] != "uploaded"]
        assert all(o["code"] == "storage_error" for o in failed), failed
        todo = [Path(o["local"]) for o in failed]
        if not todo:
            break
        await asyncio.sleep(3)
    assert todo == [], todo
    statuses = await _statuses(database, se.name)
    assert statuses == {f"/cta/run/{p.name}": "available" for p in locals_}, statuses
    assert all(live_ses.stored_file(se.name, f"/cta/run/{p.name}").read_bytes() == p.read_bytes() for p in locals_)
