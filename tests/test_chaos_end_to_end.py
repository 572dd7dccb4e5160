"""Chaos end to end: the daemons `cairn up` runs (transfer workers, stager, reaper, rule
evaluator, repairer and cleaner, subscriptions) as separate processes, one SIGKILLed and
restarted every 0.5-3 s while a client drives a mixed workload through the API over three disk
SEs and a tape SE. Once the chaos stops and the daemons drain, the stored truth must hold:
nothing lost, nothing counted twice. Bounded in kills and time."""

from __future__ import annotations

import asyncio
import os
import random
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import dataset_contents, usage
from kernel.db import Document
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import store as rule_store
from tests.fixtures.api import RunningApi
from tests.fixtures.chaos import assert_counted_once, tiered_ses
from tests.fixtures.daemons import DaemonProcesses, daemon_env
from tests.fixtures.transfers import add_ses, put_files, se_root, tape_se
from transfers import requests as rq

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("CAIRN_TEST_CHAOS_KILLS", "20"))
DRAIN_S = float(os.environ.get("CAIRN_TEST_CHAOS_DRAIN_S", "90"))
# A fixed schedule by default (CI fails only on what a known schedule shows); a seed of "random"
# explores others, printed so a failure can be run again.
_SEED = os.environ.get("CAIRN_TEST_CHAOS_SEED", "11")
SEED = random.randrange(1 << 30) if _SEED == "random" else int(_SEED)
# Transfer leases long enough that a live, slow copy on a loaded machine is not taken over (its
# own kill test is tests/test_transfer_reliability.py); rule leases short, so a killed daemon's
# rule is taken over within seconds.
TRANSFERS = {"lease_s": 10, "retry_base_s": 0.2, "retry_cap_s": 2, "idle_sleep_s": 0.2, "stage_poll_s": 0.2,
             "reaper_batch": 10, "usage_settle_after_s": 5}
RULES = {"lease_s": 3, "poll_s": 0.5, "idle_sleep_s": 0.2, "batch": 20}
DAEMONS = ("transfers", "transfers", "stager", "reaper", "rule-evaluator", "rule-repairer", "rule-cleaner",
           "rule-subscriptions")
SIZE = 2048


def _env(settings: Settings) -> dict[str, str]:
    env = daemon_env(settings, **TRANSFERS)
    env.update({f"CAIRN_RULES__{k.upper()}": str(v) for k, v in RULES.items()})
    return env


class StorageWatch:
    """Every disk SE's files (not partial ones) by path, seen as (inode, mtime): a path whose
    version changes between two looks without going away in between was written twice."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.last: dict[Path, tuple[int, int]] = {}
        self.rewritten: set[Path] = set()
        self.partial: list[Path] = []  # partial files seen at the last look

    def look(self) -> None:
        now: dict[Path, tuple[int, int]] = {}
        self.partial = []
        for root in self.roots:
            for path in root.rglob("*"):
                if ".cairn-part-" in path.name:
                    self.partial.append(path)
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if path.is_file():
                    now[path] = (st.st_ino, st.st_mtime_ns)
        self.rewritten |= {p for p, v in now.items() if p in self.last and self.last[p] != v}
        self.last = now


async def _workload(api: RunningApi, tmp_path: Path, loose: list[str], tape_files: list[str], gone: list[str],
                    over: asyncio.Event) -> tuple[dict[str, str], list[str]]:
    """The client's calls, kept up until the chaos is `over`: returns the rule ids by name and
    the files uploaded (each joins the ruled dataset; every third is also asked of T1-A by hand,
    racing the rule's copy of it there)."""
    rules: dict[str, str] = {}
    uploaded: list[str] = []
    async with api.client() as client:
        rules["keep"] = (await client.add_rule("vo:chaos", 2, "tier=1"))["id"]
        rules["brief"] = (await client.add_rule("vo:brief", 1, "T1-A"))["id"]
        assert not (await client.replicate(loose, "T1-B"))["failed"]
        await asyncio.sleep(2)
        assert not (await client.replicate(tape_files[:4], "T1-A"))["failed"]
        assert not (await client.stage(tape_files[4:], "TAPE", pin_lifetime_s=60))["failed"]
        assert not (await client.delete_replicas(gone, "T1-B"))["failed"]
        while not over.is_set() or len(uploaded) < 6:
            lfn, local = f"/vo/chaos/up{len(uploaded)}", tmp_path / f"up{len(uploaded)}"
            local.write_bytes(os.urandom(SIZE))
            outcome = (await client.upload([local], lfn, "SRC"))[0]
            assert outcome.ok, outcome
            uploaded.append(lfn)
            assert not (await client.attach("vo:chaos", lfns=[lfn]))["failed"]
            if len(uploaded) % 3 == 0:
                assert not (await client.replicate([lfn], "T1-A"))["failed"]
            if len(uploaded) == 6:
                await client.delete_rule(rules["brief"])
            await asyncio.sleep(0.3)
    return rules, uploaded


async def _chaos(victims: list[DaemonProcesses], rng: random.Random, work: asyncio.Task[Any],
                 over: asyncio.Event) -> int:
    kills = 0
    while kills < KILLS and not work.done():
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        victim = rng.choice([d for d in victims if d.procs])
        victim.kill(rng.choice(victim.procs))
        victim.start()
        kills += 1
    over.set()
    return kills


async def _settled(db: AsyncDatabase[Document], rule_id: str) -> bool:
    if await db[rq.REQUESTS].count_documents({"state": {"$in": list(rq.OPEN_STATES)}}):
        return False
    rule = await db[rule_store.RULES].find_one({"_id": rule_id})
    if rule is None or rule["state"] != "ok" or await db[rule_store.RULES].count_documents({}) != 1:
        return False
    # Ok once it has seen every file attached (the last attachments reach it through the feed).
    members = await db[dataset_contents.DATASET_FILES].count_documents({"did": "vo:chaos"})
    if await db[rule_locks.LOCKS].count_documents({"rule": rule_id, "state": "ok"}) != 2 * members:
        return False
    # Replica counts a killed daemon left noted on their SEs: the transfer workers' sweep settles them.
    return not any(d.get(usage.INTENTS) for d in await db[usage.USAGE].find({"_id": {"$regex": "^se:"}}).to_list())


async def _locks_by_file(db: AsyncDatabase[Document]) -> dict[tuple[str, str], int]:
    """The (lfn, se) held by more than one lock (for a failure's message)."""
    held = Counter((lock["lfn"], lock["se"]) for lock in await db[rule_locks.LOCKS].find({}).to_list())
    return {place: n for place, n in held.items() if n > 1}


def _adler32(path: Path) -> str | None:
    try:
        return f"{zlib.adler32(path.read_bytes()):08x}"
    except FileNotFoundError:
        return None


async def test_nothing_lost_nothing_counted_twice_while_daemons_are_killed_at_random(
    database: AsyncDatabase[Document], settings: Settings, api: RunningApi, tmp_path: Path,
) -> None:
    ses = tiered_ses(tmp_path)
    tape = tape_se("TAPE", tmp_path / "tape", stage_delay_s=0.3)
    await add_ses(database, *ses.values(), tape)
    ruled = [f"/vo/chaos/f{i:02d}" for i in range(30)]
    brief = [f"/vo/brief/f{i:02d}" for i in range(10)]
    loose = [f"/vo/loose/f{i:02d}" for i in range(20)]
    gone = [f"/vo/gone/f{i:02d}" for i in range(20)]
    tape_files = [f"/vo/tape/f{i}" for i in range(6)]
    await put_files(database, [ses["SRC"]], ruled + brief + loose, size=SIZE)
    await put_files(database, [ses["SRC"], ses["T1-B"]], gone, size=SIZE)
    await put_files(database, [tape], tape_files, size=SIZE)
    async with api.client() as client:
        for did, lfns in (("vo:chaos", ruled), ("vo:brief", brief)):
            await client.create_did(did)
            assert not (await client.attach(did, lfns=lfns))["failed"]

    (tmp_path / "logs").mkdir()
    env, rng = _env(settings), random.Random(SEED)
    victims = [DaemonProcesses(name, env, tmp_path / "logs") for name in DAEMONS]
    watch = StorageWatch([se_root(se) for se in ses.values()])
    started = time.monotonic()
    try:
        for daemon in victims:
            daemon.start()
        over = asyncio.Event()
        work = asyncio.create_task(_workload(api, tmp_path, loose, tape_files, gone, over))
        chaos = asyncio.create_task(_chaos(victims, rng, work, over))
        while not (chaos.done() and work.done()):
            watch.look()
            await asyncio.sleep(0.1)
        kills, (rules, uploaded) = chaos.result(), work.result()
        deadline = time.monotonic() + DRAIN_S
        while not await _settled(database, rules["keep"]):
            logs = "\n".join(d.logs() for d in victims)
            assert time.monotonic() < deadline, f"not drained (seed {SEED}); logs:\n{logs[-8000:]}"
            watch.look()
            await asyncio.sleep(0.2)
        watch.look()
    finally:
        for daemon in victims:
            daemon.stop_all()
    print(f"chaos: seed {SEED}, {kills} kills, {len(uploaded)} uploads, "
          f"{time.monotonic() - started:.1f} s, "
          f"{len(watch.partial)} partial file(s) left by killed copies")
    assert kills >= KILLS
    requests = await database[rq.REQUESTS].find({}).to_list()
    twice = {str(p): [r for r in requests if p.name == r["lfn"].rsplit("/", 1)[1]] for p in watch.rewritten}
    assert twice == {}, f"written twice on storage (seed {SEED})"

    # Only the deleted rule's copies may have been cancelled (with it); everything else is done.
    ended = Counter(r["state"] for r in requests if not (r["state"] == "cancelled" and r["lfn"] in brief))
    assert set(ended) == {"done"}, f"{ended} (seed {SEED})"
    copies: Counter[tuple[str, str]] = Counter()
    for r in requests:
        if r["kind"] == "transfer":
            copies[(r["lfn"], r["dest_se"])] += int(r.get("copies", 0))
    assert [t for t, n in copies.items() if n > 1] == [], f"copied twice (seed {SEED})"

    await assert_counted_once(database, SEED, f"; locks held twice: {await _locks_by_file(database)}")
    assert await database[rule_locks.LOCKS].count_documents({"rule": {"$ne": rules["keep"]}}) == 0

    files = {d["_id"]: d for d in await database["files"].find({}).to_list()}
    for lfn, doc in files.items():
        for replica in doc["replicas"]:
            if replica["se"] in ses and replica["status"] == "available":
                path = se_root(ses[replica["se"]]) / lfn.lstrip("/")
                assert _adler32(path) == doc["adler32"] and path.stat().st_size == doc["size"], (lfn, replica)
    for lfn in gone:
        assert [r["se"] for r in files[lfn]["replicas"]] == ["SRC"]
        assert not (se_root(ses["T1-B"]) / lfn.lstrip("/")).exists(), lfn
    catalogued = {se_root(ses[r["se"]]) / lfn.lstrip("/") for lfn, doc in files.items() for r in doc["replicas"]
                  if r["se"] in ses}
    assert set(watch.last) - catalogued == set(), f"bytes on storage without a replica (seed {SEED})"
    placed = Counter(r["se"] for lfn in ruled + uploaded for r in files[lfn]["replicas"] if r["status"] == "available")
    assert placed["T1-A"] == placed["T1-B"] == len(ruled) + len(uploaded)
