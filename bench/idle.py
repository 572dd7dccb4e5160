"""Benchmark: what an idle `cairn up` costs as its transfer history grows.

    python bench/idle.py [--history 0,100000,300000] [--window 60]
                         [--of requests|jobs|rules|replicas|tasks|pilots] [--tree PATH]

For each history size: `cairn up` (the tree's code, FerretDB from $CAIRN_FERRETDB or the usual
places) in a scratch directory; HISTORY transfer requests submitted and ended (`done`), as months
of use leave them (or, `--of jobs`, HISTORY job records that ran and ended; `--of rules`, HISTORY
rules at rest, all their locks ok; `--of replicas`, HISTORY files registered with a replica on
LOCAL-DISK1, which is given a `space.total_bytes` far above them, so the reaper looks at its
space once a minute and evicts nothing; `--of tasks`, an active transformation whose HISTORY
tasks are done and whose HISTORY files are processed; `--of pilots`, a local pilot queue at
LOCAL whose HISTORY pilots ended, and no job waiting); 10 s to settle;
then each of its processes' CPU over WINDOW seconds in which
nothing is asked of it. The daemons still look for work every second or so (claims, staging
polls, pins to release, copying replicas to sweep): those looks must cost the same whatever the
history holds. The first size (0) is the baseline of the same run. `--tree` measures another
checkout of Cairn (its own `cairn up`) for a before/after. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient  # noqa: E402

from bench.harness import cpu_seconds  # noqa: E402
from catalogue.files import register_files  # noqa: E402
from catalogue.site_queues import SiteQueue, put_queue  # noqa: E402
from catalogue.storage_elements import get_storage_element, put_storage_element  # noqa: E402
from kernel import event_loop  # noqa: E402
from kernel.db import Document  # noqa: E402
from kernel.principal import Principal  # noqa: E402
from productions import tasks, transformation_files, transformations  # noqa: E402
from productions.spec import TransformationSpec  # noqa: E402
from transfers import queueing  # noqa: E402
from transfers import requests as rq  # noqa: E402
from wms import jobs  # noqa: E402
from wms.pilot_records import PILOTS  # noqa: E402

BATCH = 10_000


@contextlib.contextmanager
def running_up(tree: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """`cairn up` of the tree in a scratch directory: (its process, the database URI, its log's
    text once it runs); stopped (SIGINT, then SIGKILL after 60 s) and removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-up-"))
    log = scratch / "up.log"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with log.open("wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "cairn", "up"], cwd=scratch, env=env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(180):
            time.sleep(1)
            text = log.read_text()
            found = re.search(r"FerretDB on (mongodb://\S+)", text)
            if found and "running; press Ctrl-C" in text:
                break
            if up.poll() is not None:
                raise SystemExit(f"cairn up did not start:\n{text[-3000:]}")
        else:
            raise SystemExit(f"cairn up did not start in 180 s:\n{log.read_text()[-3000:]}")
        yield up, found.group(1), text
    finally:
        with contextlib.suppress(ProcessLookupError):  # (it may have died already)
            os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def ended_job(number: int, at: dt.datetime) -> Document:
    """A job record as one that ran and ended leaves it (fields of `wms.jobs.JobRecord`, history)."""
    steps = ["received", "checking", "waiting", "matched", "running", "done"]
    return {"_id": str(number), "name": f"job {number}", "owner": "bench", "group": "local", "groups": ["local"],
            "scopes": [], "vo": "local", "description": {"executable": "/bin/true", "arguments": [str(number)]},
            "priority": 5, "state": "done", "reason": "exit code 0", "submitted": at, "updated": at,
            "recheck_at": at, "heartbeat_at": at, "attempt": 1, "reschedules": 0, "site": "LOCAL",
            "pilot": "bench-pilot", "exit_code": 0, "lease_owner": None, "lease_expires": None,
            "history": [{"state": state, "time": at, "reason": state} for state in steps]}


def ok_rule(number: int, at: dt.datetime) -> Document:
    """A rule whose locks are all ok and that nobody changes (fields of `rules.rule_models.Rule`)."""
    return {"_id": f"{number:032x}", "vo": "local", "did": f"local:ds{number}", "did_type": "DATASET",
            "account": "bench", "copies": 2, "expression": "tier=1", "grouping": "DATASET", "weight": None,
            "activity": "default", "source_expression": None, "locked": False, "comment": "", "priority": 3,
            "subscription": None, "state": "ok", "error": None, "stuck_since": None, "created": at, "modified": at,
            "expires_at": None, "dirty": False, "generation": 1, "due": at + dt.timedelta(days=3650), "unplaced": 0,
            "locks_replicating": 0, "locks_ok": 20, "locks_stuck": 0, "lease_owner": None, "lease_expires": None}


async def ended_history(uri: str, count: int, kind: str) -> None:
    """COUNT records of `kind`'s history (HISTORIES) in the installation's database."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    try:
        await HISTORIES[kind](client["cairn"], count)
    finally:
        await client.close()


async def ended_requests(db: Any, count: int) -> None:
    """COUNT transfer requests submitted and ended, in batches as bulk requests come."""
    for start in range(0, count, BATCH):
        items = [{"lfn": f"/history/f{i:07d}", "dest_se": "LOCAL-DISK2"}
                 for i in range(start, min(count, start + BATCH))]
        result = await queueing.submit_transfers(db, items, requester="bench")
        await db[rq.REQUESTS].update_many(
            {"_id": {"$in": list(result["successful"].values())}},
            {"$set": {"state": "done", "finished": rq.now(), "result": {"mode": "tpc", "bytes": 1 << 20}},
             "$unset": {"active_key": ""}})


async def _records(db: Any, count: int, collection: str, make: Callable[[int, dt.datetime], Document]) -> None:
    at = rq.now()
    for start in range(0, count, BATCH):
        await db[collection].insert_many([make(1_000_000 + i, at) for i in range(start, min(count, start + BATCH))])


async def ended_jobs(db: Any, count: int) -> None:
    """COUNT job records that ran and ended."""
    await _records(db, count, jobs.JOBS, ended_job)


async def rules_at_rest(db: Any, count: int) -> None:
    """COUNT rules whose locks are all ok."""
    await _records(db, count, "rules", ok_rule)


async def space_managed_history(db: Any, count: int) -> None:
    """COUNT files with a replica on LOCAL-DISK1 (registered: the usage records follow), and a
    space limit on that SE that they fill to one part in a million."""
    admin = Principal(sub="bench", vo="local", groups=("admin",), scopes=frozenset({"admin"}))
    for start in range(0, count, BATCH):
        files = [{"lfn": f"/history/d{i // 1000:04d}/f{i:07d}", "size": 1 << 20, "adler32": f"{i:08x}",
                  "replicas": [{"se": "LOCAL-DISK1"}]} for i in range(start, min(count, start + BATCH))]
        result = await register_files(db, admin, files)
        if result["failed"]:
            raise SystemExit(f"registration failed: {list(result['failed'].items())[:3]}")
    se = await get_storage_element(db, "LOCAL-DISK1")
    se.space = se.space.model_copy(update={"total_bytes": max(1, count) << 40})
    await put_storage_element(db, se)


async def processed_transformation(db: Any, count: int) -> None:
    """An active transformation with COUNT tasks done, one file each, processed (the fields of
    `productions.tasks.document` and `productions.transformation_files.add_files`)."""
    admin = Principal(sub="bench", vo="local", groups=("admin",), scopes=frozenset({"admin"}))
    spec = TransformationSpec.model_validate({"name": "history", "input_query": "type=raw", "input_path": "/",
                                              "grouping": {"count": 1}, "job": {"executable": "/bin/true"}})
    doc = await transformations.create(db, admin, spec)
    at = rq.now()
    for start in range(0, count, BATCH):
        numbers = range(start, min(count, start + BATCH))
        await db[tasks.TASKS].insert_many([
            {**tasks.document(doc["_id"], n, [f"/history/f{n:07d}"], {"site": "LOCAL"}), "state": "done",
             "job": f"{n:032x}", "files_marked": True, "reason": "job done"} for n in numbers])
        await db[transformation_files.FILES].insert_many([
            {"_id": transformation_files.file_id(doc["_id"], f"/history/f{n:07d}"), "transformation": doc["_id"],
             "lfn": f"/history/f{n:07d}", "status": "processed", "task": tasks.task_id(doc["_id"], n),
             "size": 1 << 20, "meta": {"type": "raw"}, "group_value": None, "failures": 0, "added": at,
             "updated": at} for n in numbers])
    await db[transformations.TRANSFORMATIONS].update_one(
        {"_id": doc["_id"]}, {"$set": {"state": "active", "next_task": count, "initial_after": "~"}})


async def ended_pilots(db: Any, count: int) -> None:
    """A local queue at LOCAL and COUNT of its pilots that ran and ended (`wms.pilot_records`)."""
    await put_queue(db, SiteQueue(name="local", site="LOCAL", backend="local", max_waiting=2, max_running=2))
    at = rq.now()
    for start in range(0, count, BATCH):
        await db[PILOTS].insert_many([
            {"_id": f"LOCAL.local.{i:010x}", "site": "LOCAL", "queue": "local", "backend": "local",
             "log": f"/tmp/pilot-{i}.log", "factory": "bench", "state": "done", "batch_id": str(i), "jobs": [],
             "submitted_at": at, "updated": at, "exit_code": 0} for i in range(start, min(count, start + BATCH))])


HISTORIES: dict[str, Callable[[Any, int], Awaitable[None]]] = {
    "requests": ended_requests, "jobs": ended_jobs, "rules": rules_at_rest, "replicas": space_managed_history,
    "tasks": processed_transformation, "pilots": ended_pilots,
}


def one_size(tree: Path, history: int, window: float, kind: str) -> dict[str, Any]:
    with running_up(tree) as (up, uri, _):
        began = time.perf_counter()
        event_loop.run(ended_history(uri, history, kind))
        filled = time.perf_counter() - began
        time.sleep(10)
        listed = subprocess.run(["pgrep", "-s", str(up.pid)], capture_output=True, text=True).stdout
        pids = [int(p) for p in listed.split()]
        names = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()[:90] for pid in pids}
        before = {pid: cpu_seconds(pid) for pid in pids}
        time.sleep(window)
        used = {names[pid]: round(cpu_seconds(pid) - before[pid], 2) for pid in pids}
    database = sum(cpu for name, cpu in used.items() if "ferretdb" in name)
    return {"history": history, "of": kind, "fill_s": round(filled, 1), "window_s": window,
            "cpu_s": {"database": round(database, 2), "all": round(sum(used.values()), 2)},
            "database_cpu_share": round(database / window, 3),
            "processes": dict(sorted(used.items(), key=lambda item: -item[1])[:8])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default="0,100000,300000", help="ended requests, comma-separated (0 first)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of idleness measured")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the Cairn checkout whose `cairn up` runs")
    parser.add_argument("--of", choices=tuple(HISTORIES), default="requests",
                        help="what the history holds: ended transfer requests, ended jobs, rules at rest (ok), "
                             "replicas on a space-managed SE, a transformation's done tasks or a queue's ended pilots")
    args = parser.parse_args()
    sizes = [one_size(args.tree.resolve(), int(n), args.window, args.of) for n in args.history.split(",")]
    print(json.dumps({"benchmark": "idle cairn up", "tree": str(args.tree.resolve()), "sizes": sizes}, indent=1))


if __name__ == "__main__":
    main()
