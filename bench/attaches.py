"""Benchmark: what attaching files to a dataset costs, against inserting the same rows bare.

    python -m bench.attaches [--files 10000] [--rounds 3]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI), registers FILES
files over 100 directories once, then per round, each phase into a dataset of its own:
- attach: `dataset_contents.attach_files` in calls of 1000 LFNs (what `cairn dataset attach` runs:
  the files' read permission, the dataset's counts charged first, the rows, and the look for
  files moved or removed meanwhile, `catalogue.directory_moves.leaving`);
- bare: `insert_many` of the same rows into `dataset_files`, 1000 a call (the floor).
Prints JSON: seconds per round and their medians, milliseconds and database CPU-ms per file, and
attach over bare.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import cpu_seconds, emit, over, phase_figures, testbed
from catalogue import dataset_contents
from catalogue.datasets import DidIn, create_did
from catalogue.files import register_files
from kernel.db import Document
from kernel.principal import Principal

ADMIN = Principal(sub="bench", vo="bench", groups=("admin",), scopes=frozenset({"admin"}))
CALL = 1000


async def registered(db: AsyncDatabase[Document], count: int) -> list[str]:
    lfns = [f"/bench/attach/d{i % 100:03d}/f{i:07d}" for i in range(count)]
    for start in range(0, count, 5000):
        result = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1000, "adler32": "00000001"}
                                                  for lfn in lfns[start:start + 5000]])
        assert not result["failed"], list(result["failed"].items())[:3]
    return lfns


async def attach(db: AsyncDatabase[Document], did: str, lfns: list[str]) -> None:
    for start in range(0, len(lfns), CALL):
        done = await dataset_contents.attach_files(db, ADMIN, did, lfns[start:start + CALL])
        assert not done["failed"], list(done["failed"].items())[:3]


async def bare(db: AsyncDatabase[Document], did: str, lfns: list[str]) -> None:
    for start in range(0, len(lfns), CALL):
        await db["dataset_files"].insert_many([{"_id": f"{did}#{lfn}", "did": did, "lfn": lfn, "size": 1000}
                                               for lfn in lfns[start:start + CALL]], ordered=False)


async def measure(uri: str, pid: int | None, files: int, rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    db = client[f"bench_attaches_{uuid.uuid4().hex[:8]}"]
    try:
        lfns = await registered(db, files)
        seconds: dict[str, list[float]] = {"attach": [], "bare": []}
        cpu: dict[str, list[float]] = {name: [] for name in seconds}
        for round_ in range(rounds):
            for name in ("attach", "bare") if round_ % 2 == 0 else ("bare", "attach"):
                did = f"bench:{name}{round_}"
                await create_did(db, ADMIN, DidIn(did=did))
                cpu_before, began = cpu_seconds(pid), time.perf_counter()
                await (attach if name == "attach" else bare)(db, did, lfns)
                seconds[name].append(round(time.perf_counter() - began, 3))
                cpu[name].append(cpu_seconds(pid) - cpu_before)
                assert await db["dataset_files"].count_documents({"did": did}) == files
    finally:
        await client.drop_database(db.name)
        await client.close()
    figures = phase_figures(seconds, cpu, dict.fromkeys(seconds, files), "file", pid)
    return {"files": files, "rounds": rounds, **figures, "attach_over_bare": over(figures, "attach", "bare")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="files per phase and round (10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of attach and bare (3); medians reported")
    args = parser.parse_args()
    with testbed("cairn-bench-attaches-") as bed:
        result = asyncio.run(measure(bed.database_uri, bed.database_pid, args.files, args.rounds))
        emit({"database": bed.database_kind, **result})


if __name__ == "__main__":
    main()
