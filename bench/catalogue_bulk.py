"""Benchmark: bulk registration and replica resolution through the API server.

    python bench/catalogue_bulk.py [--files 100000] [--batch 10000] [--resolve 1000,10000,100000]
                                   [--only register]

Starts a database (FerretDB in a temp dir, unless --mongodb-uri) and `python -m cairn server` as a
subprocess; registers N files with 2 replicas each in batches, then resolves the replicas of
random LFNs, once per count in --resolve (so the figures show whether the cost is linear in N);
`--only register` measures registration (and its bare baseline) alone.
Prints JSON: files/s, database commands per 1000 items (from the database server's own command
counters, so every command the API server sent is counted), CPU seconds of the API server and of
the database during each resolution (from /proc, so a loaded machine's waiting is not counted),
and the API server's peak RSS (VmHWM from /proc). The baselines in the same run: a bare
`insert_many` of the same documents straight into the database (the floor of registration) and a
bare `_id $in` read of the same LFNs in slices of 1000 (the floor of resolution).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient  # noqa: E402

from bench.harness import api_server, cpu_seconds  # noqa: E402
from cairn.sdk import Client  # noqa: E402
from kernel import event_loop  # noqa: E402

IGNORED = {"serverStatus", "serverstatus", "hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo",
           "buildinfo", "getParameter", "getparameter"}


async def command_count(client: AsyncMongoClient[dict[str, Any]]) -> int:
    status = await client.admin.command("serverStatus")
    commands = status.get("metrics", {}).get("commands", {})
    return sum(int(v.get("total", 0)) for k, v in commands.items() if isinstance(v, dict) and k not in IGNORED)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def se(name: str, root: str) -> dict[str, Any]:
    return {"name": name, "site": "BENCH", "kind": "disk",
            "protocols": [{"scheme": "file", "prefix": f"{root}/{name}"}]}


def files_of(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"lfn": f"/bench/d{i % 100:03d}/f{i:08d}.root", "size": 1000 + i, "adler32": f"{i:08x}",
             "replicas": [{"se": "BENCH-DISK1"}, {"se": "BENCH-DISK2"}]} for i in range(start, stop)]


async def resolve_once(client: Client, mongo: AsyncMongoClient[dict[str, Any]], database: str, files: int,
                       count: int, pid: int, db_pid: int | None) -> dict[str, Any]:
    """Resolve `count` random LFNs through the API, then read the same records bare (the floor)."""
    numbers = random.Random(count).sample(range(files), min(count, files))
    picks = [f"/bench/d{i % 100:03d}/f{i:08d}.root" for i in numbers]
    before, started = await command_count(mongo), time.perf_counter()
    cpu = cpu_seconds(pid), cpu_seconds(db_pid)
    resolved = await client.get_replicas(picks)
    seconds = time.perf_counter() - started
    server_cpu, db_cpu = cpu_seconds(pid) - cpu[0], cpu_seconds(db_pid) - cpu[1]
    commands = await command_count(mongo) - before
    assert len(resolved["successful"]) == len(picks), "some LFNs did not resolve"
    assert all(len(r) == 2 for r in resolved["successful"].values())
    started, base_cpu = time.perf_counter(), cpu_seconds(db_pid)
    wanted = sorted(picks)
    for start in range(0, len(wanted), 1000):
        await mongo[database]["files"].find({"_id": {"$in": wanted[start:start + 1000]}}).to_list()
    bare_s, bare_db_cpu = time.perf_counter() - started, cpu_seconds(db_pid) - base_cpu
    return {"lfns": len(picks), "seconds": round(seconds, 2), "lfns_per_s": round(len(picks) / seconds),
            "server_cpu_s": round(server_cpu, 2), "database_cpu_s": round(db_cpu, 2), "db_commands": commands,
            "db_commands_per_1000_lfns": round(commands * 1000 / len(picks), 2),
            "baseline_bare_id_in_find": {"seconds": round(bare_s, 2), "database_cpu_s": round(bare_db_cpu, 2)}}


async def measure(args: argparse.Namespace, uri: str, database: str, port: int, pid: int, db_pid: int | None,
                  workdir: Path, token: str) -> dict[str, Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        async with Client(f"http://127.0.0.1:{port}", token, timeout_s=3600) as client:
            for name in ("BENCH-DISK1", "BENCH-DISK2"):
                await client.put_se(se(name, str(workdir / "se")))

            before, started = await command_count(mongo), time.perf_counter()
            cpu = cpu_seconds(pid), cpu_seconds(db_pid)
            failed = 0
            for start in range(0, args.files, args.batch):
                result = await client.register_files(files_of(start, min(args.files, start + args.batch)))
                failed += len(result["failed"])
            register_s = time.perf_counter() - started
            register_cpu = cpu_seconds(pid) - cpu[0], cpu_seconds(db_pid) - cpu[1]
            register_cmds = await command_count(mongo) - before

            resolves = []
            for count in [] if args.only == "register" else args.resolve:
                resolves.append(await resolve_once(client, mongo, database, args.files, count, pid, db_pid))

        # Baseline: the same documents inserted bare, in the same batches, into another collection.
        docs = [{"_id": f["lfn"], **f} for f in files_of(0, args.files)]
        started = time.perf_counter()
        for start in range(0, len(docs), args.batch):
            await mongo[database]["baseline"].insert_many(docs[start:start + args.batch], ordered=False)
        baseline_s = time.perf_counter() - started
        rss = peak_rss_kib(pid)
        await mongo.drop_database(database)
    finally:
        await mongo.close()
    return {
        "files": args.files,
        "replicas_per_file": 2,
        "batch": args.batch,
        "register": {"seconds": round(register_s, 2), "files_per_s": round(args.files / register_s),
                     "db_commands": register_cmds,
                     "db_commands_per_1000_files": round(register_cmds * 1000 / args.files, 2), "failed": failed,
                     "server_cpu_s": round(register_cpu[0], 2), "database_cpu_s": round(register_cpu[1], 2)},
        "resolve": resolves,
        "baseline_bare_insert_many": {"seconds": round(baseline_s, 2), "files_per_s": round(args.files / baseline_s)},
        "server_peak_rss_mib": round(rss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--resolve", type=lambda s: [int(n) for n in s.split(",")], default=[1000, 10_000, 100_000],
                        help="comma-separated counts of LFNs to resolve, one resolution each")
    parser.add_argument("--only", choices=["register"], help="measure registration alone (no resolutions)")
    parser.add_argument("--mongodb-uri", default=os.environ.get("CAIRN_MONGODB_URI"))
    args = parser.parse_args()
    with api_server("cairn-bench-", args.mongodb_uri) as api:
        figures = event_loop.run(measure(args, api.uri, api.database, api.port, api.pid, api.database_pid, api.workdir,
                                      api.token))
        figures["database"] = api.database_kind
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
