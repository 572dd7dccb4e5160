"""Benchmark: feeding one transformation with N matching files and making its tasks.

    python bench/transformations.py [--files 100000] [--per-task 100] [--mongodb-uri URI] [--trace-memory]

Starts a database (FerretDB in a temp dir unless --mongodb-uri or $CAIRN_MONGODB_URI), creates a
transformation on `type=raw` under /bench, registers N matching files through the catalogue
(which appends their change-feed events), then times the transformation daemons' work until
every file is in a task: the feeder consuming the feed (`productions.feeding.handle_events`) and task
creation (`productions.task_creation.create_tasks`). Figures: files/s from the first
registration to the last task, files/s of feeding + task creation alone, database commands per
file (a pymongo CommandListener on the daemons' client), and with --trace-memory the Python
memory after each feed batch (flat: it does not grow with N). The baseline in the same run is
the initial query path: a second transformation created after the files exist, fed by
`feeding.initial_feed` (one streamed `find`). Jobs are not submitted. Prints JSON.
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
from catalogue import change_feed  # noqa: E402
from catalogue.directories import directory_document, insert_directories, now  # noqa: E402
from catalogue.files import register_files  # noqa: E402
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element  # noqa: E402
from kernel import event_loop  # noqa: E402
from kernel.db import Document, ensure_indexes  # noqa: E402
from kernel.principal import Principal  # noqa: E402
from productions import feeding, task_creation, transformation_files, transformations  # noqa: E402
from productions.spec import TransformationSpec  # noqa: E402

ADMIN = Principal(sub="bench", vo="bench", groups=("bench",), scopes=frozenset({"admin"}))
SETUP_BATCH = 10_000
IGNORED = ("hello", "ismaster", "isMaster", "endSessions", "ping")


class Commands(monitoring.CommandListener):
    """Counts database commands by name while `counting` is set."""

    def __init__(self) -> None:
        self.counting = False
        self.seen: Counter[str] = Counter()
        self.millis: Counter[str] = Counter()
        self._open: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.counting and event.command_name not in IGNORED:
            self.seen[event.command_name] += 1
            self._open[event.request_id] = f"{event.command_name} {event.command.get(event.command_name)}"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def _done(self, request_id: int, micros: int) -> None:
        key = self._open.pop(request_id, None)
        if key is not None:
            self.millis[key] += micros / 1000

    def slowest(self, top: int = 6) -> dict[str, int]:
        """Total milliseconds of the commands that took longest, by command and collection."""
        return {key: round(ms) for key, ms in self.millis.most_common(top)}


def spec(name: str, per_task: int) -> TransformationSpec:
    return TransformationSpec.model_validate({
        "name": name, "input_query": "type=raw", "input_path": "/bench", "grouping": {"count": per_task},
        "job": {"executable": "/bin/true"}})


async def register(db: AsyncDatabase[Document], files: int) -> None:
    await put_storage_element(db, StorageElement(name="SRC", site="SRC",
                                                 protocols=[Protocol(scheme="file", prefix="/tmp/bench-src")]))
    for start in range(0, files, SETUP_BATCH):
        batch = [{"lfn": f"/bench/raw/f{i:08d}", "size": 1000 + i % 997, "adler32": f"{i:08x}",
                  "replicas": [{"se": "SRC"}], "meta": {"type": "raw", "run": i // 1000}}
                 for i in range(start, min(files, start + SETUP_BATCH))]
        result = await register_files(db, ADMIN, batch)
        assert not result["failed"], list(result["failed"].items())[:3]


async def feed_and_group(db: AsyncDatabase[Document], doc: Document, memory: list[int] | None,
                         phases: dict[str, float]) -> int:
    """Run the feeder and task creation until nothing is left to do; returns tasks made."""
    t0 = time.perf_counter()

    async def handle(events: list[change_feed.Event]) -> None:  # the feeder's handler, sampling memory
        await feeding.handle_events(db, events)
        if memory is not None:
            memory.append(tracemalloc.get_traced_memory()[0])

    while await change_feed.consume(db, feeding.CONSUMER, "bench-feeder", handle, lease_s=600):
        pass
    t1 = time.perf_counter()
    made = 0
    while created := await task_creation.create_tasks(db, await transformations.get(db, doc["_id"])):
        made += created
    phases.update(feed_s=round(t1 - t0, 2), task_creation_s=round(time.perf_counter() - t1, 2))
    return made


async def run(uri: str, files: int, per_task: int, trace_memory: bool) -> dict[str, Any]:
    commands = Commands()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, event_listeners=[commands])
    db = client[f"bench_{os.getpid()}"]
    try:
        await ensure_indexes(db, index_specs())
        await insert_directories(db, [directory_document("/bench", ADMIN, mode=0o755, at=now())])
        fed = await transformations.create(db, ADMIN, spec("fed", per_task))
        await feeding.initial_feed(db, fed)  # nothing yet: it becomes active
        fed = await transformations.get(db, fed["_id"])
        started = time.perf_counter()
        await register(db, files)
        registered = time.perf_counter()
        memory: list[int] | None = [] if trace_memory else None
        if trace_memory:
            tracemalloc.start()
        commands.counting = True
        phases: dict[str, float] = {}
        tasks_made = await feed_and_group(db, fed, memory, phases)
        commands.counting = False
        done = time.perf_counter()
        if trace_memory:
            tracemalloc.stop()
        counts = await transformation_files.count_by_status(db, fed["_id"])
        assert counts["assigned"] == files, counts
        feed_commands = sum(commands.seen.values())
        by_name = dict(commands.seen)
        slowest = commands.slowest()
        # baseline: the initial query of a transformation made after the files exist
        commands.seen.clear()
        late = await transformations.create(db, ADMIN, spec("late", per_task))
        commands.counting = True
        t0 = time.perf_counter()
        await feeding.initial_feed(db, late)
        initial_s = time.perf_counter() - t0
        commands.counting = False
        late_counts = await transformation_files.count_by_status(db, late["_id"])
        assert late_counts["unused"] == files, late_counts
        result: dict[str, Any] = {
            "files": files, "files_per_task": per_task, "tasks": tasks_made,
            "registration_s": round(registered - started, 2),
            "feed_and_tasks_s": round(done - registered, 2), **phases,
            "files_per_s_registration_to_tasks": round(files / (done - started), 1),
            "files_per_s_feed_and_tasks": round(files / (done - registered), 1),
            "db_commands_per_file": round(feed_commands / files, 4), "db_commands": by_name,
            "slowest_commands_ms": slowest,
            "baseline_initial_query": {"seconds": round(initial_s, 2), "files_per_s": round(files / initial_s, 1),
                                       "db_commands_per_file": round(sum(commands.seen.values()) / files, 4)},
        }
        if memory:
            result["python_memory_after_feed_batches_mb"] = {
                "first": round(memory[0] / 1e6, 2), "middle": round(memory[len(memory) // 2] / 1e6, 2),
                "last": round(memory[-1] / 1e6, 2), "max": round(max(memory) / 1e6, 2), "batches": len(memory)}
        return result
    finally:
        await client.drop_database(db.name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--per-task", type=int, default=100)
    parser.add_argument("--mongodb-uri", default=os.environ.get("CAIRN_MONGODB_URI"))
    parser.add_argument("--trace-memory", action="store_true")
    args = parser.parse_args()
    uri, ferret = args.mongodb_uri, None
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-tf-"))
    if not uri:
        ferret = start_ferretdb(scratch / "db")
        uri = ferret.uri
    try:
        result = event_loop.run(run(uri, args.files, args.per_task, args.trace_memory))
        result["database"] = "given" if args.mongodb_uri else "FerretDB 1.24 (SQLite)"
        print(json.dumps(result, indent=2))
    finally:
        if ferret is not None:
            ferret.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
