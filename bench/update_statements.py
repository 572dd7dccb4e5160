"""Benchmark: the database's cost of a bulk write of single-document updates (one `update`
command of many statements: what the transfer workers' bulk ends, replica registrations and
usage counters send) against `update_many` of the same documents (one statement: the floor).

    python -m bench.update_statements [--docs 5000] [--per-command 50] [--rounds 3]
                                      [--ferretdb BINARY ...]

For each FerretDB binary given (default: the one Cairn finds), interleaved over the rounds:
starts it in a scratch directory, makes a collection of request-like documents with the indexes
Cairn makes for transfer requests there, then times each round's bulk writes (`--per-command`
UpdateOne statements per command, each by `_id`) and an `update_many` by `_id $in` of the same
slices, reading the database's CPU from /proc. Prints JSON: database CPU-ms per statement and per
document of `update_many`, and their ratio (1.0 = a statement costs what a document of one
update_many does). Give the build before a change and the build after to compare them in one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne

from bench.harness import cpu_seconds, emit
from cairn.embedded_db import find_ferretdb, start_ferretdb
from kernel import event_loop
from kernel.db import Document, ensure_indexes
from transfers.requests import INDEXES, REQUESTS


def request(i: int, at: dt.datetime) -> Document:
    return {"_id": f"req-{i:08d}", "kind": "transfer", "lfn": f"/bench/d{i % 100}/f{i:06d}", "dest_se": "SE-B",
            "state": "queued", "priority": 3, "created": at, "modified": at, "requester": "bench", "vo": "bench",
            "submission": f"sub-{i // 1000}", "attempts": 0, "active_key": f"transfer|/bench/f{i}|SE-B",
            "activity": "default", "lease_owner": None, "lease_expires": None}


async def one_round(binary: str, docs: int, per_command: int) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-updates-"))
    os.environ["CAIRN_FERRETDB"] = binary
    database = start_ferretdb(scratch)
    try:
        client: AsyncMongoClient[Document] = AsyncMongoClient(database.uri)
        db = client["bench"]
        await ensure_indexes(db, INDEXES)
        at = dt.datetime.now(dt.UTC)
        requests = db[REQUESTS]
        await requests.insert_many([request(i, at) for i in range(docs)])
        indexes = sorted(await requests.index_information())
        slices = [[f"req-{i:08d}" for i in range(s, min(s + per_command, docs))] for s in range(0, docs, per_command)]
        pid = database.process.pid
        out: dict[str, Any] = {"indexes": indexes}
        for name, state in (("statements", "active"), ("update_many", "done")):
            start_cpu, start = cpu_seconds(pid), time.perf_counter()
            for ids in slices:
                change = {"$set": {"state": state, "lease_owner": "w", "modified": dt.datetime.now(dt.UTC)}}
                if name == "statements":
                    await requests.bulk_write([UpdateOne({"_id": i, "lease_owner": {"$ne": "x"}}, change)
                                               for i in ids], ordered=False)
                else:
                    await requests.update_many({"_id": {"$in": ids}}, change)
            out[f"{name}_cpu_ms_per_doc"] = (cpu_seconds(pid) - start_cpu) * 1000 / docs
            out[f"{name}_wall_ms_per_doc"] = (time.perf_counter() - start) * 1000 / docs
        assert await requests.count_documents({"state": "done"}) == docs
        await client.close()
        return out
    finally:
        database.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def version(binary: str) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--per-command", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ferretdb", action="append", help="a FerretDB binary (repeat to compare builds)")
    args = parser.parse_args()
    binaries = args.ferretdb or [find_ferretdb()]
    rounds: dict[str, list[dict[str, Any]]] = {b: [] for b in binaries}
    for _ in range(args.rounds):
        for binary in binaries:
            rounds[binary].append(await one_round(binary, args.docs, args.per_command))
    results: list[dict[str, Any]] = []
    for binary, measured in rounds.items():
        medians = {key: round(statistics.median(r[key] for r in measured), 3) for key in measured[0]
                   if key != "indexes"}
        results.append({"ferretdb": binary, "version": version(binary), "indexes": measured[0]["indexes"], **medians,
                        "statement_over_update_many": round(medians["statements_cpu_ms_per_doc"]
                                                            / medians["update_many_cpu_ms_per_doc"], 2),
                        "rounds": measured})
    emit({"docs": args.docs, "per_command": args.per_command, "rounds": args.rounds, "builds": results})


if __name__ == "__main__":
    event_loop.run(main())
