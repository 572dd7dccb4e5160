"""Benchmark: what adding and removing replicas costs the catalogue, against the same writes bare
(no usage counters, no change feed, no guards, no writer tokens).

    python -m bench.replica_writes [--files 10000] [--rounds 3]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI), registers FILES
files with one replica each over 100 directories, then per round, each phase in calls of 1000
files (what `POST /replicas/add` and `/replicas/remove` run):
- add: `add_replicas` of a replica on a second SE for every file;
- remove: `remove_replicas` of those replicas;
- bare_add / bare_remove: one unguarded `$push` / `$pull` per file in one bulk write per call.
Each add and removal guards its update, carries its call's token and counts what it wrote
(`catalogue/replica_writers.py`: exact when several calls write the same replicas at once); each
round checks `usage rebuild` finds no drift. Prints JSON: seconds per round and their medians,
milliseconds and database CPU-ms per replica, and each phase over its bare write.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import cpu_seconds, emit, over, phase_figures, testbed
from catalogue.files import register_files
from catalogue.replicas import add_replicas, remove_replicas
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from catalogue.usage import rebuild
from kernel import event_loop
from kernel.db import Document
from kernel.principal import Principal

ADMIN = Principal(sub="bench", vo="bench", groups=("admin",), scopes=frozenset({"admin"}))
FIRST, SECOND = "BENCH-A", "BENCH-B"
CALL = 1000  # replicas per call
PHASES = ("add", "remove", "bare_add", "bare_remove")


async def registered(db: AsyncDatabase[Document], count: int) -> list[str]:
    lfns = [f"/bench/d{i % 100:03d}/f{i:07d}" for i in range(count)]
    for start in range(0, count, 5000):
        result = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1000, "adler32": "00000001",
                                                   "replicas": [{"se": FIRST}]} for lfn in lfns[start:start + 5000]])
        assert not result["failed"], list(result["failed"].items())[:3]
    return lfns


async def phase(db: AsyncDatabase[Document], name: str, lfns: list[str]) -> None:
    element = {"se": SECOND, "url": "file:///bench/x", "status": "available"}
    for start in range(0, len(lfns), CALL):
        part = lfns[start:start + CALL]
        if name == "add":
            outcome = await add_replicas(db, [{"lfn": lfn, "se": SECOND} for lfn in part])
        elif name == "remove":
            outcome = await remove_replicas(db, [{"lfn": lfn, "se": SECOND} for lfn in part])
        else:
            change = {"$push": {"replicas": element}} if name == "bare_add" else {"$pull": {"replicas": element}}
            await db["files"].bulk_write([UpdateOne({"_id": lfn}, change) for lfn in part], ordered=False)
            continue
        assert not outcome["failed"], list(outcome["failed"].items())[:3]


async def measure(uri: str, pid: int | None, files: int, rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    db = client[f"bench_replica_writes_{uuid.uuid4().hex[:8]}"]
    seconds: dict[str, list[float]] = {name: [] for name in PHASES}
    cpu: dict[str, list[float]] = {name: [] for name in PHASES}
    try:
        for se in (FIRST, SECOND):
            await put_storage_element(db, StorageElement(name=se, site="BENCH", kind="disk",
                                                         protocols=[Protocol(scheme="file", prefix=f"/bench/{se}")]))
        lfns = await registered(db, files)
        for _ in range(rounds):
            for name in PHASES:
                used, began = cpu_seconds(pid), time.perf_counter()
                await phase(db, name, lfns)
                seconds[name].append(round(time.perf_counter() - began, 3))
                cpu[name].append(cpu_seconds(pid) - used)
                on_second = await db["files"].count_documents({"replicas.se": SECOND})
                assert on_second == (files if name.endswith("add") else 0), (name, on_second)
                if name == "remove":  # what the adds and removals counted is what they wrote
                    assert (await rebuild(db, fix=False))["drifted"] == 0
    finally:
        await client.drop_database(db.name)
        await client.close()
    figures = phase_figures(seconds, cpu, dict.fromkeys(seconds, files), "replica", pid)
    return {"files": files, "rounds": rounds, **figures,
            "add_over_bare": over(figures, "add", "bare_add"),
            "remove_over_bare": over(figures, "remove", "bare_remove")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="files (replicas per phase and round) (10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four phases (3); medians reported")
    args = parser.parse_args()
    with testbed("cairn-bench-replica-writes-") as bed:
        result = event_loop.run(measure(bed.database_uri, bed.database_pid, args.files, args.rounds))
        emit({"database": bed.database_kind, **result})


if __name__ == "__main__":
    main()
