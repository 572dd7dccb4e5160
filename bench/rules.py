"""Benchmark: a replication rule on a large dataset.

    python bench/rules.py [--files 100000] [--copies 2] [--mongodb-uri URI] [--trace-memory] [--no-progress]

Starts a database (FerretDB in a temp dir unless --mongodb-uri or $CAIRN_MONGODB_URI), makes a
source SE holding every file and three tier-1 SEs, registers N files and attaches them to one
dataset, creates a rule "COPIES copies on tier=1", and times the rule evaluator's first pass on
it (the evaluation writes every lock and submits every transfer request) — the time until all
locks and requests exist. Database commands are counted with a pymongo CommandListener on
the client the evaluator uses, and reported per 1000 files, with the commands that took longest
(by collection and filter shape). With --trace-memory the pass's peak Python memory is reported
per file (tracemalloc, which slows the pass: time it without). The baseline in the same run is
the request queue alone: submitting the same N x COPIES transfers with `transfers.queueing.submit`
(what any bulk replication costs without rules) into an empty queue, as the rule's was.

Then (unless --no-progress) the rule's progress once its transfers are over: no transfer runs,
but what the transfer workers would leave is written — every locked file gets its replica on
the chosen SE (`copying`), the catalogue flips them `available` and the requests end `done`. The
flip, by the catalogue's bulk path (`set_replica_statuses`, what uploads and workers use), is the
baseline of this phase; the evaluator's next pass, which turns every lock ok and puts it on its
replica (`rules.locks.change_replica_locks`), is timed until the rule is ok. Prints JSON.

Why `rules.evaluation` reads each collection once per pass rather than per batch: FerretDB
scans a collection for every filter other than `{_id: <string>}`, so reading per batch would
make a pass quadratic. Its memory: about 1.3 KB of peak Python memory per file
(`--trace-memory`, 10,000 files, 2 copies), so about 130 MB for a rule on 100,000 files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient, monitoring  # noqa: E402
from pymongo.asynchronous.database import AsyncDatabase  # noqa: E402

from cairn.components import index_specs  # noqa: E402
from cairn.embedded_db import start_ferretdb  # noqa: E402
from catalogue.dataset_contents import attach_files  # noqa: E402
from catalogue.datasets import DidIn, create_did  # noqa: E402
from catalogue.files import fetch_files, register_files  # noqa: E402
from catalogue.replicas import add_replicas, set_replica_statuses  # noqa: E402
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element  # noqa: E402
from kernel import event_loop  # noqa: E402
from kernel.db import Document, ensure_indexes  # noqa: E402
from kernel.principal import Principal  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from rules import locks as rule_locks  # noqa: E402
from rules import rule_claims, store  # noqa: E402
from rules.evaluator import RuleEvaluator  # noqa: E402
from rules.rule_models import RuleIn  # noqa: E402
from transfers import queueing  # noqa: E402
from transfers import requests as rq  # noqa: E402

ADMIN = Principal(sub="bench", vo="bench", groups=("bench",), scopes=frozenset({"admin"}))
BATCH = 1000
# Registration and attachment read the catalogue per call: large calls keep the setup of 100k
# files short.
SETUP_BATCH = 10_000


IGNORED = ("hello", "ismaster", "isMaster", "endSessions", "ping")


def _shape(value: Any) -> Any:
    """A filter with its values replaced by their kinds (what the profile groups by)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()} if any(k.startswith("$") for k in value) or len(value) < 8 \
            else "{...}"
    if isinstance(value, list):
        return [_shape(value[0]), "..."] if value else []
    return type(value).__name__


class Commands(monitoring.CommandListener):
    """Counts commands by name, and times them by name, collection and filter shape, while
    `counting` is set."""

    def __init__(self) -> None:
        self.counting = False
        self.seen: Counter[str] = Counter()
        self.millis: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._open: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.counting or event.command_name in IGNORED:
            return
        self.seen[event.command_name] += 1
        command = event.command
        collection = command.get(event.command_name)
        what = command.get("filter", command.get("query"))
        if what is None and event.command_name in ("update", "delete"):
            statements = command.get("updates") or command.get("deletes") or [{}]
            what = statements[0].get("q")
        self._open[event.request_id] = f"{event.command_name} {collection} {json.dumps(_shape(what))}"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def _done(self, request_id: int, micros: int) -> None:
        key = self._open.pop(request_id, None)
        if key is not None:
            self.millis[key] += micros  # microseconds, shown in ms by `profile`
            self.calls[key] += 1

    def profile(self, top: int = 12) -> list[dict[str, Any]]:
        """The commands that took longest in all, with their count and mean time."""
        return [{"command": key, "calls": self.calls[key], "total_ms": round(us / 1000),
                 "mean_ms": round(us / 1000 / self.calls[key], 2)} for key, us in self.millis.most_common(top)]


async def setup(db: AsyncDatabase[Document], files: int, root: Path) -> None:
    await ensure_indexes(db, index_specs())
    for name, tier in (("SRC", 0), ("T1-A", 1), ("T1-B", 1), ("T1-C", 1)):
        await put_storage_element(db, StorageElement(name=name, site=name, attributes={"tier": tier},
                                                     protocols=[Protocol(scheme="file", prefix=str(root / name))]))
    await create_did(db, ADMIN, DidIn(did="bench:big"))
    for start in range(0, files, SETUP_BATCH):
        batch: list[dict[str, Any]] = [{"lfn": f"/bench/big/f{i:08d}", "size": 1000 + i % 997, "adler32": f"{i:08x}",
                  "replicas": [{"se": "SRC"}]} for i in range(start, min(files, start + SETUP_BATCH))]
        result = await register_files(db, ADMIN, batch)
        assert not result["failed"], list(result["failed"].items())[:3]
        attached = await attach_files(db, ADMIN, "bench:big", [f["lfn"] for f in batch])
        assert not attached["failed"]


async def timed_pass(evaluator: RuleEvaluator, db: AsyncDatabase[Document], rule_id: str, commands: Commands, *,
                     trace_memory: bool = False) -> tuple[float, dict[str, int], list[dict[str, Any]], int | None]:
    """One evaluator pass on the rule: seconds, commands by name, slowest commands, and with
    trace_memory its peak Python memory in bytes."""
    claimed = await rule_claims.claim(db, evaluator.worker, {"_id": rule_id}, lease_s=3600)
    assert claimed is not None
    commands.seen.clear()
    commands.millis.clear()
    commands.calls.clear()
    commands.counting = True
    if trace_memory:
        tracemalloc.start()
    began = time.perf_counter()
    await evaluator.work_on(claimed)
    seconds = time.perf_counter() - began
    memory_peak = tracemalloc.get_traced_memory()[1] if trace_memory else None
    tracemalloc.stop()
    commands.counting = False
    return seconds, dict(commands.seen), commands.profile(), memory_peak


async def progress_phase(db: AsyncDatabase[Document], evaluator: RuleEvaluator, rule: Document,
                         commands: Commands, files: int) -> dict[str, Any]:
    """What the transfer workers would leave, then the pass that takes the rule to ok (see the docstring)."""
    placed: dict[str, list[str]] = {}
    async for lock in db[rule_locks.LOCKS].find({"rule": rule["_id"]}, {"lfn": 1, "se": 1}):
        placed.setdefault(lock["se"], []).append(lock["lfn"])
    for se, lfns in placed.items():
        for start in range(0, len(lfns), SETUP_BATCH):
            added = await add_replicas(db, [{"lfn": lfn, "se": se, "status": "copying"}
                                            for lfn in lfns[start:start + SETUP_BATCH]])
            assert not added["failed"]
    began = time.perf_counter()
    for se, lfns in placed.items():
        for start in range(0, len(lfns), BATCH):
            chunk = lfns[start:start + BATCH]
            found = await fetch_files(db, chunk, {"replicas": 1})
            flipped = await set_replica_statuses(
                db, [{"lfn": lfn, "se": se, "status": "available", "expected": "copying"} for lfn in chunk], found)
            assert not flipped["failed"], list(flipped["failed"].items())[:3]
    flip_s = time.perf_counter() - began
    # In `_id` slices: one update_many of 200,000 requests ran at ~38 per second on FerretDB.
    ids = [d["_id"] for d in await db[rq.REQUESTS].find({"requester": f"rule:{rule['_id']}"}, {"_id": 1}).to_list()]
    for start in range(0, len(ids), BATCH):
        await db[rq.REQUESTS].update_many({"_id": {"$in": ids[start:start + BATCH]}}, {
            "$set": {"state": "done", "finished": rq.now()}, "$unset": {"active_key": ""}})
    seconds, seen, profile, _ = await timed_pass(evaluator, db, rule["_id"], commands)
    done = await store.get_rule(db, rule["_id"])
    sample = await db["files"].find_one({"_id": placed[next(iter(placed))][0]}, {"replicas": 1})
    assert sample is not None and all(r.get("locks") == 1 for r in sample["replicas"] if r["se"] != "SRC")
    total = sum(seen.values())
    return {
        "progress": {"seconds_to_ok": round(seconds, 3), "state": done["state"], "locks_ok": done["locks_ok"],
                     "locks_per_s": round(done["locks_ok"] / seconds, 1), "db_commands": total,
                     "db_commands_per_1000_files": round(total * 1000 / files, 1), "slowest": profile},
        "baseline_catalogue_flip": {"seconds": round(flip_s, 3), "replicas": sum(map(len, placed.values()))},
        "progress_over_baseline": round(seconds / flip_s, 2) if flip_s else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    uri = args.mongodb_uri or os.environ.get("CAIRN_MONGODB_URI")
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-rules-"))
    if uri is None:
        server = start_ferretdb(tmp / "db")
        uri = server.uri
    commands = Commands()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True, event_listeners=[commands])
    try:
        db = client["bench_rules"]
        await client.drop_database("bench_rules")
        began = time.perf_counter()
        await setup(db, args.files, tmp / "se")
        setup_s = time.perf_counter() - began
        settings = load_settings(mongodb_uri=uri, database="bench_rules", var_dir=tmp / "var")
        rule = await store.create_rule(db, ADMIN, RuleIn(did="bench:big", copies=args.copies, expression="tier=1"))
        evaluator = RuleEvaluator(settings, db)
        rule_s, rule_commands, profile, memory_peak = await timed_pass(
            evaluator, db, rule["_id"], commands, trace_memory=args.trace_memory)
        locks = await db[rule_locks.LOCKS].count_documents({"rule": rule["_id"]})
        requests = await db[rq.REQUESTS].count_documents({"requester": f"rule:{rule['_id']}"})
        done = await store.get_rule(db, rule["_id"])
        total = sum(rule_commands.values())
        result: dict[str, Any] = {
            "database": "ferretdb" if server else uri.split("@")[-1],
            "files": args.files, "copies": args.copies, "setup_s": round(setup_s, 2),
            "rule": {"seconds_to_all_locks_and_requests": round(rule_s, 3), "locks": locks, "requests": requests,
                     "state": done["state"], "locks_replicating": done["locks_replicating"],
                     "files_per_s": round(args.files / rule_s, 1),
                     "python_peak_bytes_per_file": round(memory_peak / args.files) if memory_peak else None,
                     "db_commands": total,
                     "db_commands_per_1000_files": round(total * 1000 / args.files, 1),
                     "by_command": rule_commands, "slowest": profile},
        }
        print(json.dumps(result["rule"]), file=sys.stderr, flush=True)  # kept should the baseline fail

        # The baseline in a database of its own with the same indexes, its request queue empty as
        # the rule's was (deleting 100k requests at once is more than FerretDB's SQLite takes).
        base = client["bench_rules_baseline"]
        await client.drop_database("bench_rules_baseline")
        await ensure_indexes(base, index_specs())
        items = {se: [{"lfn": f"/bench/big/f{i:08d}", "dest_se": se} for i in range(args.files)]
                 for se in ("T1-A", "T1-B", "T1-C")[:args.copies]}
        commands.seen.clear()
        commands.counting = True
        began = time.perf_counter()
        for wanted in items.values():
            for start in range(0, len(wanted), BATCH):
                await queueing.submit(base, "transfer", wanted[start:start + BATCH], requester="baseline")
        baseline_s = time.perf_counter() - began
        commands.counting = False
        baseline_commands = sum(commands.seen.values())
        result["baseline_submit_only"] = {
            "seconds": round(baseline_s, 3), "requests": args.files * args.copies,
            "db_commands_per_1000_files": round(baseline_commands * 1000 / args.files, 1)}
        result["rule_over_baseline"] = round(rule_s / baseline_s, 2) if baseline_s else None
        if args.progress:
            print(json.dumps(result), file=sys.stderr, flush=True)
            result.update(await progress_phase(db, evaluator, rule, commands, args.files))
        return result
    finally:
        await client.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--copies", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--mongodb-uri")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="skip the phase after the transfers (rule to ok)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="measure the pass's peak Python memory (tracemalloc; slows the pass)")
    args = parser.parse_args()
    print(json.dumps(event_loop.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
