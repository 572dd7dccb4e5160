"""Chaos end to end, on the API side: the `cairn server` process a client drives is SIGKILLed at
random and started again on the same port, while the client uploads, registers, attaches,
replicates, moves and removes files, moves a directory tree, makes a rule on a file and submits jobs,
and the daemons (transfer
workers, reaper, rule evaluator, repairer and cleaner) work as separate processes on a "2 copies
on tier=1" rule. The SDK rides the restarts out, and the client also retries a call that met the
dead server for longer, as a user's script does (each of these calls is safe to send twice; a
rule and a submission name themselves with a request id of the script's). Once the chaos stops
and the daemons drain: everything acknowledged is there, once (one rule per call, the jobs of a
submission once; a file moved by a call a kill cut short at one LFN only, once the workers' sweep
took its copy back or finished it; a tree moved by a call a kill cut short whole at its new place,
once the workers' sweep finished the move), and nothing is counted twice (usage, dataset counts,
quota, rule locks).
Bounded in kills and time."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port, wait_for_port
from cairn.sdk import Client
from catalogue import dataset_contents, dataset_count_claims, usage
from catalogue.files import FILES
from catalogue.usage import REMOVAL_LEASE
from kernel.db import Document
from kernel.errors import Conflict, NotFound, ServiceUnavailable
from kernel.process import child_preexec, stop_processes
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import store as rule_store
from tests.fixtures.api import RunningApi
from tests.fixtures.chaos import assert_counted_once, tiered_ses
from tests.fixtures.daemons import DaemonProcesses, daemon_env
from tests.fixtures.transfers import add_ses, se_root, write_bytes
from transfers import requests as rq

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("CAIRN_TEST_API_CHAOS_KILLS", "10"))
DRAIN_S = 90.0  # the transfer workers' sweep settles what killed calls left every 30 s
# A call is sent again for this long: longer than the chaos lasts, as some calls cannot end while
# it does (a removal waits up to 2 s for the register call of its record, which a kill may have
# left to the workers' sweep, and the server may be killed first).
AGAIN_S = 150.0
_SEED = os.environ.get("CAIRN_TEST_API_CHAOS_SEED", "7")
SEED = random.randrange(1 << 30) if _SEED == "random" else int(_SEED)
SIZE = 2048
# A directory move's marks' lease, for the API servers and the workers: a move a kill cut short is
# finished by the workers' sweep this long after its last batch (600 s by default).
DIRECTORY_MOVE_LEASE_S = 5
TREE = 400  # files of the tree moved each round (a move long enough for some kills to cut it)
DAEMONS = ("transfers", "reaper", "rule-evaluator", "rule-repairer", "rule-cleaner")
T = TypeVar("T")


class Server:
    """The API server process, killed and started again on one port; what befell it, for a
    failure's message."""

    events: list[str] = []

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log, self.port = settings, log, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        Server.events = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**daemon_env(self.settings, directory_move_lease_s=DIRECTORY_MOVE_LEASE_S), "CAIRN_LOG_LEVEL": "INFO"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "cairn", "server", "--port", str(self.port)],
                                         env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=child_preexec)
        began = time.monotonic()
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s=60, proc=self.proc)
        finally:
            Server.events.append(f"{time.time():.1f} pid {self.proc.pid} started in {time.monotonic() - began:.1f} s "
                                 f"(exit code {self.proc.poll()})")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        Server.events.append(f"{time.time():.1f} pid {self.proc.pid} killed")

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], timeout_s=15)


async def again(call: Callable[[], Awaitable[T]]) -> T:
    """call(), sent again while the server is away (as a user's script would)."""
    deadline = time.monotonic() + AGAIN_S
    while True:
        try:
            return await call()
        except ServiceUnavailable as exc:
            assert time.monotonic() < deadline, f"the server stayed away: {exc}; {Server.events[-6:]}"
            await asyncio.sleep(0.2)


class Workload:
    """The client's calls, and what each acknowledged."""

    def __init__(self, client: Client, tmp: Path, src: Any) -> None:
        self.client, self.tmp, self.src = client, tmp, src
        self.uploaded: dict[str, bytes] = {}
        self.registered: dict[str, bytes] = {}
        self.removed: set[str] = set()
        self.replicated: set[str] = set()
        self.pending: set[str] = set()  # removals refused "try again"
        self.rules: dict[str, str] = {}  # file -> the rule the call on it answered
        self.jobs: dict[str, list[str]] = {}  # job name -> the ids its submission answered
        self.moved: dict[str, str] = {}  # destination -> source, of the moves acknowledged
        self.moving: dict[str, str] = {}  # source -> destination, of the moves refused "try again"
        self.moves_cut: Counter[str] = Counter()  # how moves met a kill: found moved, or refused
        self.trees: dict[str, list[str]] = {}  # a tree moved each round: its files, below it

    async def round(self, number: int) -> None:
        locals_ = []
        for k in range(3):
            path = self.tmp / f"up{number}-{k}"
            path.write_bytes(os.urandom(SIZE))
            locals_.append(path)
        outcomes = await self.client.upload(locals_, f"/vo/chaos/r{number}/", self.src.name)
        assert all(o.status == "uploaded" for o in outcomes), outcomes
        lfns = [f"/vo/chaos/r{number}/{p.name}" for p in locals_]
        self.uploaded.update({lfn: p.read_bytes() for lfn, p in zip(lfns, locals_, strict=True)})
        assert not (await again(lambda: self.client.attach("vo:chaos", lfns=lfns)))["failed"]
        files = {f"/vo/reg/r{number}-{k}": os.urandom(SIZE) for k in range(4)}
        for lfn, data in files.items():
            write_bytes(self.src, lfn, data)
        body = [{"lfn": lfn, "size": SIZE, "adler32": f"{zlib.adler32(data):08x}", "replicas": [{"se": self.src.name}]}
                for lfn, data in files.items()]
        assert not (await again(lambda: self.client.register_files(body)))["failed"]
        self.registered.update(files)
        first = sorted(files)[0]
        assert not (await again(lambda: self.client.replicate([first], "T1-A")))["failed"]
        self.replicated.add(first)
        ruled = sorted(files)[1]
        rule = await again(lambda: self.client.add_rule(ruled, 1, "T1-B", request_id=f"chaos-rule-{number}"))
        self.rules[ruled] = rule["id"]
        jobs = [{"name": f"chaos-{number}", "executable": "/bin/true", "arguments": [str(k)]} for k in range(2)]
        self.jobs[f"chaos-{number}"] = await again(
            lambda: self.client.submit_jobs(jobs, request_id=f"chaos-jobs-{number}"))
        await self.move(sorted(files)[2], f"/vo/moved/r{number}")
        tree = f"/vo/tree/r{number}"
        below = [f"/a/x{k}" for k in range(TREE // 2)] + [f"/b/c/y{k}" for k in range(TREE // 2)]
        assert not (await again(lambda: self.client.register_files(
            [{"lfn": tree + name, "size": SIZE, "adler32": "00000001"} for name in below])))["failed"]
        self.trees[tree] = below
        await self.move(tree, f"/vo/trees/r{number}")
        if number % 2:
            gone = sorted(lfn for lfn in self.registered
                          if lfn not in self.replicated | self.removed | self.pending | set(self.rules)
                          | set(self.moved.values()) | set(self.moving))[:2]
            await self.remove(gone)

    async def move(self, source: str, destination: str) -> None:
        """Move source; sent again after a kill, the call finds it moved (404: its first sending
        did it) or, cut short half-way, its copy at the destination (409) until the workers'
        sweep takes that back (a file's) or the tree "being moved" until the sweep finished its
        move (a directory's): tried again after the chaos (`finish`)."""
        kind = "tree" if source.startswith("/vo/tree/") else "file"
        try:
            await again(lambda: self.client.move(source, destination))
        except NotFound:  # the first sending moved it; its answer was lost
            self.moves_cut[f"{kind} found moved"] += 1
        except Conflict as exc:
            assert "exists already" in str(exc) or "try again" in str(exc), exc
            self.moves_cut[f"{kind} refused"] += 1
            self.moving[source] = destination
            return
        self.moving.pop(source, None)
        self.moved[destination] = source

    async def remove(self, lfns: list[str]) -> None:
        """Remove lfns; one a removal cut short by a kill still marks (its lease, two minutes,
        not run out) is refused "try again", and is tried again after the chaos (`finish`)."""
        failed = (await again(lambda: self.client.remove_files(lfns, force=True)))["failed"]
        assert all("try again" in str(why) for why in failed.values()), failed
        self.removed.update(lfn for lfn in lfns if lfn not in failed)
        self.pending.update(failed)

    async def finish(self) -> None:
        deadline = time.monotonic() + REMOVAL_LEASE.total_seconds() + 30
        while self.pending or self.moving:
            lfns, self.pending = sorted(self.pending), set()
            if lfns:
                await self.remove(lfns)
            for source, destination in sorted(self.moving.items()):
                await self.move(source, destination)
            if self.pending or self.moving:
                assert time.monotonic() < deadline, (self.pending, self.moving)
                await asyncio.sleep(2)


async def _not_drained(db: AsyncDatabase[Document], rule_id: str) -> str:
    """What the daemons still have to do ("" once drained)."""
    if open_ := await db[rq.REQUESTS].count_documents({"state": {"$in": list(rq.OPEN_STATES)}}):
        return f"{open_} open request(s)"
    rule = await db[rule_store.RULES].find_one({"_id": rule_id})
    if rule is None or rule["state"] != "ok":
        return f"rule {rule and rule['state']}"
    if not_ok := await db[rule_store.RULES].count_documents({"state": {"$ne": "ok"}}):
        return f"{not_ok} file rule(s) not ok"
    members = await db[dataset_contents.DATASET_FILES].count_documents({"did": "vo:chaos"})
    if (ok := await db[rule_locks.LOCKS].count_documents({"rule": rule_id, "state": "ok"})) != 2 * members:
        return f"{ok} locks ok for {members} files"
    # What calls a kill cut short left to settle (their claims, their notes on the SEs' usage): the
    # transfer workers' sweep settles them once they have been silent a while.
    if claims := await db[usage.USAGE_CLAIMS].count_documents({usage.PENDING: {"$exists": True}}):
        return f"{claims} usage claim(s) pending"
    if claims := await db[dataset_count_claims.CLAIMS].count_documents({}):
        return f"{claims} dataset count claim(s)"
    if any(d.get(usage.INTENTS) for d in await db[usage.USAGE].find({"_id": {"$regex": "^se:"}}).to_list()):
        return "usage notes on SEs"
    return ""


async def test_nothing_acknowledged_lost_nothing_counted_twice_while_the_api_server_is_killed_at_random(
    database: AsyncDatabase[Document], settings: Settings, api: RunningApi, tmp_path: Path,
) -> None:
    ses = tiered_ses(tmp_path)
    await add_ses(database, *ses.values())
    (tmp_path / "logs").mkdir()
    (tmp_path / "up").mkdir()
    env = daemon_env(settings, lease_s=10, retry_base_s=0.2, retry_cap_s=2, idle_sleep_s=0.2, reaper_batch=10,
                     usage_settle_after_s=5, directory_move_lease_s=DIRECTORY_MOVE_LEASE_S)
    env.update({"CAIRN_RULES__LEASE_S": "3", "CAIRN_RULES__POLL_S": "0.5", "CAIRN_RULES__IDLE_SLEEP_S": "0.2"})
    daemons = [DaemonProcesses(name, env, tmp_path / "logs") for name in DAEMONS]
    server, rng = Server(settings, tmp_path / "logs" / "server.log"), random.Random(SEED)
    started = time.monotonic()
    print(f"API chaos: seed {SEED}")  # before anything can fail: a failure's schedule can be run again
    try:
        await asyncio.to_thread(server.start)
        for daemon in daemons:
            daemon.start()
        async with Client(server.url, api.admin_token) as client:
            await client.mkdir("/vo/chaos", parents=True)
            await client.mkdir("/vo/moved", parents=True)
            await client.mkdir("/vo/trees", parents=True)
            await client.create_did("vo:chaos")
            rule_id = (await client.add_rule("vo:chaos", 2, "tier=1"))["id"]
            work = Workload(client, tmp_path / "up", ses["SRC"])
            kills, number = 0, 0

            async def chaos() -> None:
                nonlocal kills
                while kills < KILLS:
                    await asyncio.sleep(rng.uniform(0.5, 3.0))  # up this long, then down for 0.2-1 s + a start
                    await asyncio.to_thread(server.kill)
                    await asyncio.sleep(rng.uniform(0.2, 1.0))
                    await asyncio.to_thread(server.start)
                    kills += 1

            killing = asyncio.create_task(chaos())
            slowest = 0.0
            while not killing.done() or number < 4:
                began = time.monotonic()
                await work.round(number)
                slowest, number = max(slowest, time.monotonic() - began), number + 1
            await killing
            began = time.monotonic()
            await work.finish()
            print(f"slowest round {slowest:.1f} s; removals and moves tried again after the chaos for "
                  f"{time.monotonic() - began:.1f} s; moves that met a kill: {dict(work.moves_cut)}")
        deadline = time.monotonic() + DRAIN_S
        while left := await _not_drained(database, rule_id):
            assert time.monotonic() < deadline, f"not drained: {left}; " + "\n".join(d.logs() for d in daemons)[-6000:]
            await asyncio.sleep(0.3)
    finally:
        server.stop()
        for daemon in daemons:
            daemon.stop_all()
    finished = sum(path.read_text(errors="replace").count("which a stopped process had left half done")
                   for path in (tmp_path / "logs").glob("transfers-*.log"))
    print(f"API chaos: {kills} kills, {number} rounds, {time.monotonic() - started:.1f} s; "
          f"tree moves a kill cut that the workers' sweep finished: {finished}")

    files = {d["_id"]: d for d in await database[FILES].find({}).to_list()}
    now_at = {source: destination for destination, source in work.moved.items()}
    for lfn, data in {**work.uploaded, **work.registered}.items():  # acknowledged: there, bytes and all
        if lfn in work.removed:
            assert lfn not in files, lfn
            continue
        if lfn in now_at:  # moved: at its new LFN only, its bytes where they were
            assert lfn not in files, lfn
            doc = files[now_at[lfn]]
            assert doc.get("guid") and not {"moving_guid", "move_call"} & set(doc), doc
        else:
            doc = files[lfn]
        assert doc["size"] == len(data) and doc["adler32"] == f"{zlib.adler32(data):08x}", lfn
        for replica in doc["replicas"]:
            assert replica["status"] == "available", (lfn, replica)
            assert (se_root(ses[replica["se"]]) / lfn.lstrip("/")).read_bytes() == data, (lfn, replica["se"])
    assert not [lfn for lfn in files if lfn.startswith("/vo/moved/") and lfn not in work.moved], "moved twice"
    for tree, below in work.trees.items():  # every tree whole at its new place, or (not moved) at its old
        moved_to = {source: destination for destination, source in work.moved.items()}.get(tree)
        assert moved_to is not None, f"{tree} not moved"
        assert not [lfn for lfn in files if lfn.startswith(tree + "/")], tree
        assert sorted(lfn[len(moved_to):] for lfn in files if lfn.startswith(moved_to + "/")) == sorted(below), tree
        assert all(files[moved_to + name].get("guid") and not {"moving_guid", "move_call"} & set(files[moved_to + name])
                   for name in below), tree
    placed = Counter(r["se"] for lfn in work.uploaded for r in files[lfn]["replicas"])
    assert placed == {"SRC": len(work.uploaded), "T1-A": len(work.uploaded), "T1-B": len(work.uploaded)}, placed
    assert all("T1-A" in {r["se"] for r in files[lfn]["replicas"]} for lfn in work.replicated)
    for lfn, made in work.rules.items():  # one rule per call, whatever the kills
        assert [r["_id"] for r in await database[rule_store.RULES].find({"did": lfn}).to_list()] == [made], lfn
        assert "T1-B" in {r["se"] for r in files[lfn]["replicas"]}, lfn
    for name, ids in work.jobs.items():  # each submission's jobs stored once
        stored = sorted(d["_id"] for d in await database["jobs"].find({"name": name}).to_list())
        assert len(ids) == 2 and stored == sorted(ids), (name, stored, ids)
    rows = await database[dataset_contents.DATASET_FILES].find({"did": "vo:chaos"}).to_list()
    attached = {row["lfn"] for row in rows}
    assert attached == set(work.uploaded)

    requests = await database[rq.REQUESTS].find({}).to_list()
    assert Counter(r["state"] for r in requests) == {"done": len(requests)}
    copies: Counter[tuple[str, str]] = Counter()
    for request in requests:
        if request["kind"] == "transfer":
            copies[(request["lfn"], request["dest_se"])] += int(request.get("copies", 0))
    assert [t for t, n in copies.items() if n > 1] == [], "copied twice"
    await assert_counted_once(database, SEED)
