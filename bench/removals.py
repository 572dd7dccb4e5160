"""Benchmark: what removing file records costs the catalogue, against deleting the same records
bare (no permission check, no usage counters, no change feed, no marks).

    python -m bench.removals [--files 10000] [--rounds 3]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI), then per round,
on FILES files with two replicas each over 100 directories, registered afresh for each phase:
- bulk: `remove_files(force=True)` in calls of 10,000 LFNs (what `POST /files/remove` runs);
- tree: `namespace.remove(recursive=True)` of their directory (what `cairn rm -r` runs);
- bare: `delete_many` of the same records by `_id $in`, 1000 a call (the floor).
Each removal marks the records it removes, reads them back, deletes them by its mark and counts
them (`catalogue/file_removal.py`: exact when several remove the same files at once). Prints
JSON: seconds per round and their medians, milliseconds and database CPU-ms per file, and each
phase over the bare delete.
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

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import cpu_seconds, emit, over, phase_figures, testbed
from catalogue.files import register_files, remove_files
from catalogue.namespace import remove
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from catalogue.usage import rebuild
from kernel import event_loop
from kernel.db import Document
from kernel.principal import Principal

ADMIN = Principal(sub="bench", vo="bench", groups=("admin",), scopes=frozenset({"admin"}))
SES = ("BENCH-A", "BENCH-B")
CALL = 10_000  # LFNs per remove_files call


async def registered(db: AsyncDatabase[Document], top: str, count: int) -> list[str]:
    lfns = [f"{top}/d{i % 100:03d}/f{i:07d}" for i in range(count)]
    for start in range(0, count, 5000):
        result = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1000, "adler32": "00000001",
                                                   "replicas": [{"se": se} for se in SES]}
                                                  for lfn in lfns[start:start + 5000]])
        assert not result["failed"], list(result["failed"].items())[:3]
    return lfns


async def timed(pid: int | None, action: Any) -> tuple[float, float]:
    cpu, began = cpu_seconds(pid), time.perf_counter()
    await action
    return time.perf_counter() - began, cpu_seconds(pid) - cpu


async def bulk(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    for start in range(0, len(lfns), CALL):
        outcome = await remove_files(db, ADMIN, lfns[start:start + CALL], force=True)
        assert not outcome["failed"] and all(a["removed"] for a in outcome["successful"].values())


async def bare(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    for start in range(0, len(lfns), 1000):
        await db["files"].delete_many({"_id": {"$in": lfns[start:start + 1000]}})


async def phase(db: AsyncDatabase[Document], name: str, top: str, lfns: list[str]) -> None:
    if name == "bulk":
        await bulk(db, lfns)
    elif name == "tree":
        await remove(db, ADMIN, top, recursive=True)
    else:
        await bare(db, lfns)


async def measure(uri: str, pid: int | None, files: int, rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    db = client[f"bench_removals_{uuid.uuid4().hex[:8]}"]
    try:
        for se in SES:
            await put_storage_element(db, StorageElement(name=se, site="BENCH", kind="disk",
                                                         protocols=[Protocol(scheme="file", prefix=f"/bench/{se}")]))
        seconds: dict[str, list[float]] = {"bulk": [], "tree": [], "bare": []}
        cpu: dict[str, list[float]] = {name: [] for name in seconds}
        for round_ in range(rounds):
            for name in ("bulk", "tree", "bare"):
                top = f"/bench/{name}{round_}"
                lfns = await registered(db, top, files)
                wall, used = await timed(pid, phase(db, name, top, lfns))
                seconds[name].append(round(wall, 3))
                cpu[name].append(used)
                assert await db["files"].count_documents({"_id": {"$in": lfns[:100]}}) == 0
                if name != "bare":  # what the removals counted is what they removed
                    assert (await rebuild(db, fix=False))["drifted"] == 0
            await db["usage"].delete_many({})  # the bare deletes left counters behind; next round starts clean
    finally:
        await client.drop_database(db.name)
        await client.close()
    figures = phase_figures(seconds, cpu, dict.fromkeys(seconds, files), "file", pid)
    return {"files": files, "rounds": rounds, "replicas_per_file": len(SES), **figures,
            "bulk_over_bare": over(figures, "bulk", "bare"), "tree_over_bare": over(figures, "tree", "bare")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="files per phase and round (10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of bulk, tree and bare (3); medians reported")
    args = parser.parse_args()
    with testbed("cairn-bench-removals-") as bed:
        result = event_loop.run(measure(bed.database_uri, bed.database_pid, args.files, args.rounds))
        emit({"database": bed.database_kind, **result})


if __name__ == "__main__":
    main()
