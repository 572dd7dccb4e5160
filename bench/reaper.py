"""Benchmark: the reaper's deletions, and what they cost the database per file.

    python bench/reaper.py [--files 1000] [--per-file 200] [--mongodb-uri URI]

Starts a database (FerretDB in a temp dir unless --mongodb-uri or $CAIRN_MONGODB_URI), two
local disk SEs, and files with a replica on both (1 KiB of real bytes on the one to empty).
Three runs, each on files of its own, database commands counted with a pymongo CommandListener:
- `reaper`: FILES deletion requests naming one SE, handled by `transfers.reaper.Reaper` cycles
  until none is open (the whole path: claims, retirement, bytes, records, usage, requests);
- `per_file` (baseline): PER_FILE requests handled one by one with the catalogue's per-file
  calls (retire by `set_replica_status`, delete the bytes, `pull_replicas`, `complete`), the
  shape of a reaper without batching;
- `bare` (floor): FILES replicas removed with nothing but an unlink each and one bulk `$pull`
  per 50 files (no request, no guard, no usage, no change feed).
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient, UpdateOne  # noqa: E402
from pymongo.asynchronous.database import AsyncDatabase  # noqa: E402

from bench.rules import Commands  # noqa: E402
from cairn.components import index_specs  # noqa: E402
from cairn.embedded_db import start_ferretdb  # noqa: E402
from catalogue.files import register_files  # noqa: E402
from catalogue.replica_pulls import pull_replicas  # noqa: E402
from catalogue.replica_urls import se_url  # noqa: E402
from catalogue.replicas import set_replica_status  # noqa: E402
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element  # noqa: E402
from kernel import event_loop  # noqa: E402
from kernel.db import Document, ensure_indexes, read_by_ids  # noqa: E402
from kernel.principal import Principal  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from storage_plugins.registry import plugin_for  # noqa: E402
from transfers import queueing  # noqa: E402
from transfers import request_claims as rc  # noqa: E402
from transfers import requests as rq  # noqa: E402
from transfers.reaper import Reaper  # noqa: E402

ADMIN = Principal(sub="bench", vo="bench", groups=("bench",), scopes=frozenset({"admin"}))
SIZE = 1024


async def setup(db: AsyncDatabase[Document], root: Path, groups: dict[str, int]) -> dict[str, StorageElement]:
    await ensure_indexes(db, index_specs())
    ses = {name: StorageElement(name=name, site=name, protocols=[Protocol(scheme="file", prefix=str(root / name))])
           for name in ("KEEP", "GONE")}
    for se in ses.values():
        await put_storage_element(db, se)
    for group, count in groups.items():
        lfns = [f"/bench/{group}/f{i:06d}" for i in range(count)]
        for start in range(0, count, 5000):
            batch = [{"lfn": lfn, "size": SIZE, "adler32": "00000001", "replicas": [{"se": "KEEP"}, {"se": "GONE"}]}
                     for lfn in lfns[start:start + 5000]]
            result = await register_files(db, ADMIN, batch)
            assert not result["failed"], list(result["failed"].items())[:3]
        await asyncio.to_thread(_write_bytes, [Path(se_url(ses["GONE"], lfn).removeprefix("file://")) for lfn in lfns])
    return ses


def _write_bytes(paths: list[Path]) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * SIZE)


def _figures(seconds: float, files: int, commands: Commands) -> dict[str, Any]:
    total = sum(commands.seen.values())
    return {"files": files, "seconds": round(seconds, 3), "files_per_s": round(files / seconds, 1),
            "db_commands": total, "db_commands_per_file": round(total / files, 3),
            "by_command": dict(commands.seen), "slowest": commands.profile(6)}


async def timed(commands: Commands, work: Any) -> float:
    for counter in (commands.seen, commands.millis, commands.calls):
        counter.clear()
    commands.counting = True
    began = time.perf_counter()
    await work
    seconds = time.perf_counter() - began
    commands.counting = False
    return seconds


async def submit(db: AsyncDatabase[Document], group: str, files: int) -> None:
    """The deletion requests of a run, submitted before it is timed."""
    for start in range(0, files, 1000):
        await queueing.submit(db, "delete", [{"lfn": f"/bench/{group}/f{i:06d}", "dest_se": "GONE"}
                                             for i in range(start, min(files, start + 1000))],
                              requester=f"bench-{group}")


async def reaper_run(db: AsyncDatabase[Document], reaper: Reaper) -> None:
    while await reaper.run_once():  # until a cycle finds nothing to do
        pass


async def per_file_run(db: AsyncDatabase[Document], se: StorageElement) -> None:
    while claimed := await rc.claim_many(db, "bench", kinds=["delete"], lease_s=600, limit=200):
        for request in claimed:
            lfn = request["lfn"]
            assert await set_replica_status(db, lfn, "GONE", "unavailable", expected="available")
            url = se_url(se, lfn)
            await plugin_for(url).delete(url)
            await pull_replicas(db, [(lfn, "GONE")], status="unavailable")
            await rq.complete(db, request["_id"], "bench", {"deleted": ["GONE"]})


async def bare_run(db: AsyncDatabase[Document], se: StorageElement, files: int) -> None:
    lfns = [f"/bench/bare/f{i:06d}" for i in range(files)]
    for lfn in lfns:
        await asyncio.to_thread(os.remove, se_url(se, lfn).removeprefix("file://"))
    # FerretDB has no `$pull` by condition: the exact elements, read once.
    elements = {doc["_id"]: next(r for r in doc["replicas"] if r["se"] == "GONE")
                async for doc in read_by_ids(db["files"], lfns, {"replicas": 1})}
    for start in range(0, files, 50):
        await db["files"].bulk_write([UpdateOne({"_id": lfn}, {"$pull": {"replicas": elements[lfn]}})
                                      for lfn in lfns[start:start + 50]], ordered=False)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    uri = args.mongodb_uri or os.environ.get("CAIRN_MONGODB_URI")
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-reaper-"))
    if uri is None:
        server = start_ferretdb(tmp / "db")
        uri = server.uri
    commands = Commands()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True, event_listeners=[commands])
    try:
        db = client["bench_reaper"]
        await client.drop_database("bench_reaper")
        ses = await setup(db, tmp / "se", {"reap": args.files, "perfile": args.per_file, "bare": args.files})
        settings = load_settings(mongodb_uri=uri, database="bench_reaper", var_dir=tmp / "var")
        result: dict[str, Any] = {"database": "ferretdb" if server else uri.split("@")[-1], "file_bytes": SIZE}
        await submit(db, "reap", args.files)
        seconds = await timed(commands, reaper_run(db, Reaper(settings, db)))
        result["reaper"] = _figures(seconds, args.files, commands)
        await submit(db, "perfile", args.per_file)
        seconds = await timed(commands, per_file_run(db, ses["GONE"]))
        result["baseline_per_file"] = _figures(seconds, args.per_file, commands)
        seconds = await timed(commands, bare_run(db, ses["GONE"], args.files))
        result["floor_bare"] = _figures(seconds, args.files, commands)
        left = await db["files"].count_documents({"replicas.se": "GONE"})
        assert left == 0, f"{left} replicas left on GONE"
        reaper_rate, base_rate = result["reaper"]["files_per_s"], result["baseline_per_file"]["files_per_s"]
        result["reaper_over_per_file"] = round(reaper_rate / base_rate, 2)
        result["reaper_over_bare"] = round(reaper_rate / result["floor_bare"]["files_per_s"], 2)
        return result
    finally:
        await client.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the database, the SEs' bytes and settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--per-file", type=int, default=200)
    parser.add_argument("--mongodb-uri")
    print(json.dumps(event_loop.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
