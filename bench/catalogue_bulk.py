"""Benchmark: bulk registration and replica resolution through the API server.

    python bench/catalogue_bulk.py [--files 100000] [--batch 10000] [--resolve 10000]

Starts a database (FerretDB in a temp dir, unless --mongodb-uri) and `python -m cairn server` as a
subprocess; registers N files with 2 replicas each in batches, then resolves the replicas of
random LFNs. Prints JSON: files/s, database commands per 1000 items (from the database server's
own command counters, so every command the API server sent is counted), and the API server's
peak RSS (VmHWM from /proc). The baseline in the same run is a bare `insert_many` of the same
documents straight into the database: the floor that registration overhead is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient  # noqa: E402

from cairn.embedded_db import free_port, start_ferretdb, wait_for_port  # noqa: E402
from cairn.sdk import Client  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from kernel.tokens import BuiltinIssuer  # noqa: E402

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


def start_server(uri: str, database: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m cairn server` on a free port, its log in the work directory."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_MONGODB_URI": uri, "CAIRN_DATABASE": database,
           "CAIRN_VAR_DIR": str(workdir / "var"), "CAIRN_API_PORT": str(port), "CAIRN_LOG_LEVEL": "WARNING"}
    with (workdir / "server.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "cairn", "server"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, timeout_s=60, proc=server)
    return server, port


async def measure(args: argparse.Namespace, uri: str, database: str, port: int, pid: int, workdir: Path,
                  token: str) -> dict[str, Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        async with Client(f"http://127.0.0.1:{port}", token, timeout_s=3600) as client:
            for name in ("BENCH-DISK1", "BENCH-DISK2"):
                await client.put_se(se(name, str(workdir / "se")))

            before, started = await command_count(mongo), time.perf_counter()
            failed = 0
            for start in range(0, args.files, args.batch):
                result = await client.register_files(files_of(start, min(args.files, start + args.batch)))
                failed += len(result["failed"])
            register_s = time.perf_counter() - started
            register_cmds = await command_count(mongo) - before

            picks = [f"/bench/d{i % 100:03d}/f{i:08d}.root"
                     for i in random.Random(7).sample(range(args.files), min(args.resolve, args.files))]
            before, started = await command_count(mongo), time.perf_counter()
            resolved = await client.get_replicas(picks)
            resolve_s = time.perf_counter() - started
            resolve_cmds = await command_count(mongo) - before
            assert len(resolved["successful"]) == len(picks), "some LFNs did not resolve"
            assert all(len(r) == 2 for r in resolved["successful"].values())

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
                     "db_commands_per_1000_files": round(register_cmds * 1000 / args.files, 2), "failed": failed},
        "resolve": {"lfns": len(picks), "seconds": round(resolve_s, 2), "lfns_per_s": round(len(picks) / resolve_s),
                    "db_commands": resolve_cmds,
                    "db_commands_per_1000_lfns": round(resolve_cmds * 1000 / len(picks), 2)},
        "baseline_bare_insert_many": {"seconds": round(baseline_s, 2), "files_per_s": round(args.files / baseline_s)},
        "server_peak_rss_mib": round(rss / 1024, 1),
        "database": "mongodb" if args.mongodb_uri else "ferretdb-1.24-sqlite",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--resolve", type=int, default=10_000)
    parser.add_argument("--mongodb-uri", default=os.environ.get("CAIRN_MONGODB_URI"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmp:
        workdir = Path(tmp)
        db = None if args.mongodb_uri else start_ferretdb(workdir / "db")
        server = None
        try:
            uri = args.mongodb_uri or (db.uri if db else "")
            database = f"bench_{uuid.uuid4().hex[:8]}"
            settings = load_settings(mongodb_uri=uri, database=database, var_dir=workdir / "var")
            token = BuiltinIssuer.from_settings(settings).issue(sub="bench", vo="bench", groups=["bench"],
                                                                scopes=["admin"])
            server, port = start_server(uri, database, workdir)
            figures = asyncio.run(measure(args, uri, database, port, server.pid, workdir, token))
            print(json.dumps(figures, indent=2))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            if db is not None:
                db.stop()


if __name__ == "__main__":
    main()
