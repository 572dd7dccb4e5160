"""Benchmark: what attaching files to a dataset costs, against inserting the same rows bare.

    python -m bench.attaches [--files 10000] [--rounds 3]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI), makes Cairn's
indexes as the server does, registers FILES files over 100 directories once, then per round,
each phase into a dataset of its own:
- attach: `dataset_contents.attach_files` in calls of 1000 LFNs (what `cairn dataset attach` runs:
  the files' read permission, the dataset's counts charged first, the rows, and the look for
  files moved or removed meanwhile, `catalogue.directory_moves.leaving`);
- bare: `insert_many` of the same rows into `dataset_files`, 1000 a call (the floor).
Prints JSON: seconds per round and their medians, milliseconds and database CPU-ms per file, and
attach over bare. Then MOVES single-file moves of files no dataset holds, before any row and once
all rounds' rows are in (a move looks for dataset rows of its file, `catalogue.moves`): their
seconds and `moves_with_rows_over_without` (1.0: the look does not grow with the rows). And one
dataset's files read back among all the rows: its first page and a middle page of 1000
(`list_page`, what `GET /dids/contents` serves) and its whole stream (`open_contents`, the stream
route's), with the time to the stream's first row.
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
from cairn.components import index_specs
from catalogue import dataset_contents
from catalogue.datasets import DidIn, create_did
from catalogue.files import register_files
from catalogue.moves import move
from kernel import event_loop
from kernel.db import Document, ensure_indexes
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


async def moves(db: AsyncDatabase[Document], count: int, tag: str) -> float:
    """Seconds for `count` single-file moves of fresh files that no dataset holds."""
    lfns = [f"/bench/loose/{tag}/f{i:05d}" for i in range(count)]
    result = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1000, "adler32": "00000001"} for lfn in lfns])
    assert not result["failed"]
    began = time.perf_counter()
    for lfn in lfns:
        await move(db, ADMIN, lfn, f"{lfn}.moved")
    return round(time.perf_counter() - began, 3)


async def read_back(db: AsyncDatabase[Document], did: str, middle: str) -> dict[str, float]:
    """Seconds for a dataset's first page, a page from its middle, and its stream (first row, all)."""
    figures: dict[str, float] = {}
    for name, after in (("first_page_s", None), ("middle_page_s", middle)):
        began = time.perf_counter()
        page = await dataset_contents.list_page(db, did, after=after, limit=1000)
        figures[name] = round(time.perf_counter() - began, 4)
        assert len(page["members"]) == 1000
    began, first, count = time.perf_counter(), 0.0, 0
    async for _ in await dataset_contents.open_contents(db, did):
        count += 1
        first = first or time.perf_counter() - began
    figures["stream_first_row_s"], figures["stream_s"] = round(first, 4), round(time.perf_counter() - began, 3)
    return figures


async def measure(uri: str, pid: int | None, files: int, rounds: int, move_count: int) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    db = client[f"bench_attaches_{uuid.uuid4().hex[:8]}"]
    try:
        await ensure_indexes(db, index_specs())  # as the server makes them at its start
        lfns = await registered(db, files)
        before = await moves(db, move_count, "before")
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
        rows = await db["dataset_files"].count_documents({})
        after = await moves(db, move_count, "after")
        reads = await read_back(db, "bench:attach0", sorted(lfns)[files // 2])
    finally:
        await client.drop_database(db.name)
        await client.close()
    figures = phase_figures(seconds, cpu, dict.fromkeys(seconds, files), "file", pid)
    return {"files": files, "rounds": rounds, **figures, "attach_over_bare": over(figures, "attach", "bare"),
            "moves": {"count": move_count, "seconds_without_rows": before, "seconds_with_rows": after,
                      "dataset_rows": rows},
            "moves_with_rows_over_without": round(after / before, 2), "read_back": {"dataset_files": files, **reads}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="files per phase and round (10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of attach and bare (3); medians reported")
    parser.add_argument("--moves", type=int, default=50, help="single-file moves before and after the rows (50)")
    args = parser.parse_args()
    with testbed("cairn-bench-attaches-") as bed:
        result = event_loop.run(measure(bed.database_uri, bed.database_pid, args.files, args.rounds, args.moves))
        emit({"database": bed.database_kind, **result})


if __name__ == "__main__":
    main()
