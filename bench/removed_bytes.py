"""Benchmark: deleting the bytes forced removals left (`transfers.removed_bytes`), a reaper
cycle's batch at a time against the one-by-one path it replaced (issue 17).

    python bench/removed_bytes.py [--files 2000] [--other-files 20000] [--phases batch,one_by_one]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI) and a local disk
SE, registers OTHER_FILES files that stay (the catalogue around) and two groups of FILES files
with 1 KiB of real bytes each. Each group is force-removed (untimed), then its bytes deleted
until no hold is left, database commands counted with a pymongo CommandListener:
- `batch`: `transfers.reaper.Reaper` cycles (queue, claim, `delete_removed` for the batch, end);
- `one_by_one` (baseline): the same cycles with each request carried out as before issue 17 (a
  read of its hold, a read of its file by GUID, `delete_bytes` of its one path, a release, an
  `end_many` of its one request); kept here only as the baseline. Every file of the bench is gone
  from the catalogue, so it plays the `delete` branch only;
- `storage_floor`: `delete_bytes` of FILES paths and nothing else.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import cpu_seconds, emit, ferretdb_version, testbed
from bench.rules import Commands
from cairn.components import index_specs
from catalogue.collection_names import FILES
from catalogue.files import register_files, remove_files
from catalogue.moved_paths import MOVED_PATHS, REMOVAL_HOLD, REMOVED, key_of
from catalogue.replica_urls import se_url
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from catalogue.usage import REMOVING
from kernel import event_loop
from kernel.db import Document, ensure_indexes
from kernel.principal import Principal
from kernel.settings import Settings, load_settings
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.deletion import Place, delete_bytes
from transfers.reaper import Reaper
from transfers.removed_bytes import queue_removed

ADMIN = Principal(sub="bench", vo="bench", groups=("admin",), scopes=frozenset({"admin"}))
SIZE = 1024


async def registered(db: AsyncDatabase[Document], se: StorageElement | None, top: str, count: int) -> list[str]:
    """`count` files under `top` with a replica on SE "A" (their bytes written when `se` is given)."""
    lfns = [f"{top}/d{i % 20:02d}/f{i:06d}" for i in range(count)]
    for start in range(0, count, 5000):
        result = await register_files(db, ADMIN, [{"lfn": lfn, "size": SIZE, "adler32": "00000001",
                                                   "replicas": [{"se": "A"}]} for lfn in lfns[start:start + 5000]])
        assert not result["failed"], list(result["failed"].items())[:3]
    if se is not None:
        await asyncio.to_thread(_write, [_path(se, lfn) for lfn in lfns])
    return lfns


def _path(se: StorageElement, lfn: str) -> Path:
    return Path(se_url(se, lfn).removeprefix("file://"))


def _write(paths: list[Path]) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * SIZE)


async def force_removed(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    for start in range(0, len(lfns), 10_000):
        outcome = await remove_files(db, ADMIN, lfns[start:start + 10_000], force=True)
        assert not outcome["failed"], list(outcome["failed"].items())[:3]


async def batch_run(db: AsyncDatabase[Document], settings: Settings) -> None:
    reaper = Reaper(settings, db)
    handled = 1
    while handled:  # until a cycle finds nothing to do
        handled = await reaper.run_once()


async def one_by_one_run(db: AsyncDatabase[Document], settings: Settings, se: StorageElement) -> None:
    """The reaper's cycles as they were before issue 17, for REMOVED_PATH requests alone."""
    lease_s = settings.transfers.lease_s
    while True:
        await queue_removed(db)
        claimed_at = time.monotonic()
        claimed = await rc.claim_many(db, "bench", kinds=["delete"], lease_s=lease_s,
                                      limit=settings.transfers.reaper_batch)
        if not claimed:
            return
        pending = {r["_id"] for r in claimed}
        await rc.holding(db, "bench", _each(db, se, claimed, pending), lambda p=pending: p,
                         lease_s=lease_s, since=claimed_at)


async def _each(db: AsyncDatabase[Document], se: StorageElement, requests: list[Document], pending: set[str]) -> None:
    for request in requests:
        deleted = await _old_delete_at(db, se, request["lfn"])
        pending.discard(request["_id"])
        await rq.end_many(db, [rq.End(request["_id"], rq.done_fields({"deleted": ["A"] if deleted else []}),
                                      final=True, attempts=request.get("attempts"))], "bench")


async def _old_delete_at(db: AsyncDatabase[Document], se: StorageElement, path: str) -> bool:
    """`removed_bytes.delete_at` before issue 17 (its `delete` branch; every bench file is gone)."""
    doc = await db[MOVED_PATHS].find_one({"_id": key_of(se.name, path)})
    if doc is None or not doc.get(REMOVED):
        return False
    guid = doc[REMOVED].get("guid")
    if guid is not None:  # files_by_guid
        holder = await db[FILES].find_one({"guid": guid}, {"replicas": 1, REMOVING: 1})
        assert holder is None, "the bench's baseline plays only files gone from the catalogue"
    target = (path, se.name)
    errors = await delete_bytes({target: Place(doc[REMOVED].get("url"), path, guid)}, {se.name: se}, {})
    if target in errors:
        raise errors[target]
    await db[MOVED_PATHS].delete_one({"_id": key_of(se.name, path), REMOVAL_HOLD: True, f"{REMOVED}.guid": guid})
    return True


async def floor_run(se: StorageElement, lfns: list[str]) -> None:
    errors = await delete_bytes({(lfn, "A"): Place(None, lfn) for lfn in lfns}, {"A": se}, {})
    assert not errors, list(errors.items())[:3]


async def timed(commands: Commands, pid: int | None, work: Any, files: int) -> dict[str, Any]:
    for counter in (commands.seen, commands.millis, commands.calls):
        counter.clear()
    commands.counting, cpu, began = True, cpu_seconds(pid), time.perf_counter()
    await work
    seconds, used = time.perf_counter() - began, cpu_seconds(pid) - cpu
    commands.counting = False
    total = sum(commands.seen.values())
    return {"files": files, "seconds": round(seconds, 3), "ms_per_file": round(1000 * seconds / files, 3),
            "files_per_s": round(files / seconds, 1), "db_cpu_s": round(used, 2) if pid else None,
            "db_commands": total, "db_commands_per_file": round(total / files, 3),
            "by_command": dict(commands.seen), "slowest": commands.profile(5)}


async def measure(uri: str, pid: int | None, scratch: Path, files: int, others: int, phases: list[str]
                  ) -> dict[str, Any]:
    commands = Commands()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True, event_listeners=[commands])
    db = client["bench_removed_bytes"]
    try:
        await client.drop_database(db.name)
        await ensure_indexes(db, index_specs())
        se = StorageElement(name="A", site="BENCH", protocols=[Protocol(scheme="file", prefix=str(scratch / "se"))])
        await put_storage_element(db, se)
        settings = load_settings(mongodb_uri=uri, database=db.name, var_dir=scratch / "var")
        await registered(db, None, "/bench/others", others)
        result: dict[str, Any] = {}
        for name in phases:
            lfns = await registered(db, se, f"/bench/{name}", files)
            await force_removed(db, lfns)
            work = batch_run(db, settings) if name == "batch" else one_by_one_run(db, settings, se)
            result[name] = await timed(commands, pid, work, files)
            assert not any(_path(se, lfn).exists() for lfn in lfns), f"{name}: bytes left"
            assert await db[MOVED_PATHS].count_documents({REMOVED: {"$exists": True}}) == 0, f"{name}: holds left"
        lfns = [f"/bench/floor/f{i:06d}" for i in range(files)]
        await asyncio.to_thread(_write, [_path(se, lfn) for lfn in lfns])
        result["storage_floor"] = await timed(commands, pid, floor_run(se, lfns), files)
        if len(phases) == 2:
            result["batch_over_one_by_one"] = round(result["one_by_one"]["seconds"] / result["batch"]["seconds"], 1)
        return result
    finally:
        await client.drop_database(db.name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="forced removals per phase (2000)")
    parser.add_argument("--other-files", type=int, default=20_000, help="files that stay in the catalogue (20000)")
    parser.add_argument("--phases", default="batch,one_by_one", help="batch,one_by_one (both)")
    args = parser.parse_args()
    with testbed("cairn-bench-removed-bytes-") as bed:
        result = event_loop.run(measure(bed.database_uri, bed.database_pid, bed.scratch, args.files, args.other_files,
                                     args.phases.split(",")))
        emit({"database": bed.database_kind, "ferretdb": ferretdb_version() if bed.database_pid else None,
              "files": args.files, "other_files": args.other_files, "file_bytes": SIZE, **result})


if __name__ == "__main__":
    main()
