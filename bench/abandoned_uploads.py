"""Benchmark: the reaper's look for abandoned uploads (`transfers.abandoned_uploads`) as the
catalogue grows, and the undo of a batch of them.

    python -m bench.abandoned_uploads [--files 100000] [--abandoned 500]

In a scratch database on FerretDB (or $CAIRN_MONGODB_URI): FILES files registered with an
available replica on a disk SE (the catalogue at rest), then ABANDONED more registered as an
upload does (`copying`, with a writer token) and dated a day and more back, with 4 KiB of bytes
each at their paths; and, for the baseline of the same run, the same look on the same catalogue
before the abandoned ones exist. Prints JSON: the look's seconds and database CPU-s, per 1000
files in the catalogue (it runs a few times per `abandoned_upload_s`, a day by default: every
6 h), and the sweep's seconds, database CPU-s and commands per abandoned upload, with the bytes
checked gone on the disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import monitoring

from bench.harness import cpu_seconds, emit, scratch_database, testbed
from catalogue.files import FILES, register_files
from catalogue.storage_elements import StorageElement, get_storage_element, put_storage_element
from catalogue.writer_tokens import writer_digest
from kernel import event_loop
from kernel.principal import Principal
from transfers import abandoned_uploads

ADMIN = Principal(sub="bench", vo="bench", groups=("admin",), scopes=frozenset({"admin"}))
BATCH = 1000
DAY = 86400.0


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


async def _register(db: Any, lfns: list[str], replica: dict[str, Any]) -> None:
    for start in range(0, len(lfns), BATCH):
        files = [{"lfn": lfn, "size": 4096, "adler32": "00000001", "replicas": [replica]}
                 for lfn in lfns[start:start + BATCH]]
        result = await register_files(db, ADMIN, files)
        if result["failed"]:
            raise SystemExit(f"registration failed: {list(result['failed'].items())[:3]}")


async def _look(db: Any, pid: int | None) -> dict[str, float]:
    before, cpu = time.perf_counter(), cpu_seconds(pid)
    found, _ = await abandoned_uploads.find_abandoned(db, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=DAY))
    return {"seconds": round(time.perf_counter() - before, 3), "database_cpu_s": round(cpu_seconds(pid) - cpu, 3),
            "found": sum(len(files) for files in found.values())}


async def measure(args: argparse.Namespace, uri: str, pid: int | None, root: Path,
                  commands: Commands) -> dict[str, Any]:
    async with scratch_database(uri, "bench_abandoned") as db:
        await put_storage_element(db, StorageElement(name="DISK", site="BENCH",
                                                     protocols=[{"scheme": "file", "prefix": str(root)}]))
        began = time.perf_counter()
        await _register(db, [f"/rest/d{i // 1000:04d}/f{i:07d}" for i in range(args.files)], {"se": "DISK"})
        filled = time.perf_counter() - began
        baseline = await _look(db, pid)
        dead = [f"/dead/d{i // 100:03d}/f{i:05d}" for i in range(args.abandoned)]
        await _register(db, dead, {"se": "DISK", "status": "copying", "writer": writer_digest("w" * 32)})
        then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2 * DAY)
        for lfn in dead:
            await db[FILES].update_one({"_id": lfn},
                                       {"$set": {"replicas.0.writer_at": then, "replicas.0.modified": then}})
            path = root / lfn.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 4096)
        look = await _look(db, pid)
        ses = {"DISK": await get_storage_element(db, "DISK")}
        commands.seen.clear()
        before, cpu = time.perf_counter(), cpu_seconds(pid)
        swept = await abandoned_uploads.sweep(db, ses, {}, DAY)
        seconds, db_cpu = time.perf_counter() - before, cpu_seconds(pid) - cpu
        sent, by_command = sum(commands.seen.values()), dict(commands.seen)
        left_on_disk = sum((root / lfn.lstrip("/")).exists() for lfn in dead)
        left_records = await db[FILES].count_documents({"_id": {"$in": dead}})
    per_k = 1000 / max(1, args.files)
    return {
        "files_at_rest": args.files, "fill_s": round(filled, 1),
        "look_without_abandoned": {**baseline, "database_cpu_ms_per_1000_files":
                                   round(baseline["database_cpu_s"] * 1000 * per_k, 2)},
        "look_with_abandoned": look,
        "sweep": {"abandoned": args.abandoned, "undone": swept.undone, "records_removed": swept.records_removed,
                  "failed": swept.failed, "seconds": round(seconds, 3), "database_cpu_s": round(db_cpu, 3),
                  "db_commands": sent, "db_commands_per_upload": round(sent / max(1, args.abandoned), 3),
                  "by_command": by_command, "bytes_left_on_disk": left_on_disk,
                  "records_left": left_records},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="files at rest in the catalogue (100000)")
    parser.add_argument("--abandoned", type=int, default=abandoned_uploads.BATCH,
                        help=f"abandoned uploads to undo ({abandoned_uploads.BATCH}, one sweep's batch)")
    args = parser.parse_args()
    commands = Commands()
    monitoring.register(commands)
    with testbed("cairn-bench-abandoned-") as bed:
        result = event_loop.run(measure(args, bed.database_uri, bed.database_pid, bed.scratch / "se", commands))
    emit({"benchmark": "abandoned uploads", "database": bed.database_kind, **result})


if __name__ == "__main__":
    main()
