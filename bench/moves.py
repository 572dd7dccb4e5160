"""Benchmark: what moving costs the catalogue, against relocating the same records bare.

    python -m bench.moves [--files 10000] [--file-moves 200] [--rounds 3] [--others 0]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI), registers OTHERS
files elsewhere (kept through the rounds: a move should not cost more for them), then per round,
on FILES files with two replicas each over 100 directories, registered afresh for each phase:
- tree: `moves.move` of their directory (what `cairn mv DIR` runs: the directory's mark, the
  live file marks below it read once, the paths the replicas keep recorded as held
  (`catalogue.moved_paths`), copies, originals deleted per version copied);
- files: FILE_MOVES `moves.move` of single files, one after the other (the file's mark, a
  re-read, the ancestors' marks, copy, guarded delete);
- bare: `insert_many` of the records at their new `_id`s and `delete_many` of the originals,
  1000 a call (the floor: no marks, no guards, no usage, no change feed).
Prints JSON: seconds per round and their medians, milliseconds and database CPU-ms per file, and
the tree's move over the bare relocation. Each round checks `usage rebuild` finds no drift.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import emit, over, phase_figures, testbed
from bench.removals import ADMIN, SES, registered, timed
from catalogue.moves import move
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from catalogue.usage import rebuild
from kernel import event_loop
from kernel.db import Document


async def bare(db: AsyncDatabase[Document], top: str, lfns: list[str]) -> None:
    for start in range(0, len(lfns), 1000):
        part = lfns[start:start + 1000]
        docs = await db["files"].find({"_id": {"$in": part}}).to_list()
        await db["files"].insert_many([{**d, "_id": top + "-bare" + d["_id"][len(top):], "guid": None} for d in docs])
        await db["files"].delete_many({"_id": {"$in": part}})


async def one_by_one(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    for lfn in lfns:
        await move(db, ADMIN, lfn, lfn + "-moved")


async def measure(uri: str, pid: int | None, files: int, file_moves: int, rounds: int, others: int
                  ) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    db = client[f"bench_moves_{uuid.uuid4().hex[:8]}"]
    seconds: dict[str, list[float]] = {"tree": [], "files": [], "bare": []}
    cpu: dict[str, list[float]] = {name: [] for name in seconds}
    counts = {"tree": files, "files": file_moves, "bare": files}
    try:
        for se in SES:
            await put_storage_element(db, StorageElement(name=se, site="BENCH", kind="disk",
                                                         protocols=[Protocol(scheme="file", prefix=f"/bench/{se}")]))
        if others:  # files elsewhere in the catalogue, kept through the rounds
            await registered(db, "/others", others)
        for round_ in range(rounds):
            for name in ("tree", "files", "bare"):
                top = f"/bench/{name}{round_}"
                lfns = await registered(db, top, files)
                if name == "tree":
                    action = move(db, ADMIN, top, top + "-moved")
                elif name == "files":
                    action = one_by_one(db, lfns[:file_moves])
                else:
                    action = bare(db, top, lfns)
                wall, used = await timed(pid, action)
                seconds[name].append(round(wall, 3))
                cpu[name].append(used)
                if name != "bare":  # what the moves counted is what they moved
                    assert (await rebuild(db, fix=False))["drifted"] == 0
            for name in ("files", "directories"):
                await db[name].delete_many({"_id": {"$regex": "^/bench/"}})
            await rebuild(db, fix=True)  # the bare relocation and the deletions left counters behind
    finally:
        await client.drop_database(db.name)
        await client.close()
    figures = phase_figures(seconds, cpu, counts, "file", pid)
    return {"files": files, "file_moves": file_moves, "rounds": rounds, "other_files": others,
            "replicas_per_file": len(SES), **figures,
            "tree_over_bare": over(figures, "tree", "bare")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="files per phase and round (10000)")
    parser.add_argument("--file-moves", type=int, default=200, help="single-file moves per round (200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of tree, files and bare (3); medians reported")
    parser.add_argument("--others", type=int, default=0,
                        help="files registered elsewhere first and kept, as in a catalogue that holds more (0)")
    args = parser.parse_args()
    with testbed("cairn-bench-moves-") as bed:
        result = event_loop.run(measure(bed.database_uri, bed.database_pid, args.files, args.file_moves, args.rounds,
                                     args.others))
        emit({"database": bed.database_kind, **result})


if __name__ == "__main__":
    main()
