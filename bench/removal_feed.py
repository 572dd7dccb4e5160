"""Benchmark: the rules' reading of the reaper's removals, as rule locks grow.

    python -m bench.removal_feed [--sizes 100000,200000] [--removals 1000]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI) and, per size N,
in a fresh database with the server's indexes: N rule locks (N/1000 rules) and one batch of
REMOVALS `replica_removed` events, each read by `rules.feed.mark_changed` twice in the same run:
as the reaper now writes them (naming the rules that locked each replica: none, here) and as
every removal was written before (naming none, so the locks are looked up: `$in` on `lfn`,
which the embedded database answers by reading every lock). Prints JSON: seconds and database
CPU-seconds of each, and the first over the second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cpu_seconds, emit_by_size, scratch_database
from catalogue import change_feed
from kernel.db import ensure_indexes
from rules.feed import mark_changed
from rules.locks import INDEXES as LOCK_INDEXES
from rules.locks import LOCKS, new_lock


async def measure(uri: str, pid: int | None, size: int, removals: int) -> dict[str, Any]:
    async with scratch_database(uri, "bench_removal_feed") as db:
        await ensure_indexes(db, LOCK_INDEXES)
        for start in range(0, size, 10_000):
            await db[LOCKS].insert_many([
                new_lock({"_id": f"rule{i // 1000}", "account": "bench"}, f"/vo/data/f{i:07d}", "SE-A", 1000, "ok")
                for i in range(start, min(size, start + 10_000))])
        # removals of replicas elsewhere (no lock on them), as the reaper's usually are
        gone = [f"/vo/data/f{(i * 7919) % size:07d}" for i in range(removals)]
        named = [change_feed.event("replica_removed", lfn, se="SE-B", lock_rules=[]) for lfn in gone]
        unnamed = [change_feed.event("replica_removed", lfn, se="SE-B") for lfn in gone]
        out: dict[str, Any] = {}
        for name, events in (("named", named), ("looked_up", unnamed)):
            cpu, began = cpu_seconds(pid), time.perf_counter()
            await mark_changed(db, events)
            out[name] = {"seconds": round(time.perf_counter() - began, 4), "db_cpu_s": round(cpu_seconds(pid) - cpu, 3)}
        out["named_over_looked_up"] = round(out["named"]["seconds"] / out["looked_up"]["seconds"], 4)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,200000", help="rule locks per run (100000,200000)")
    parser.add_argument("--removals", type=int, default=1000, help="removal events in the batch (1000)")
    args = parser.parse_args()
    emit_by_size("cairn-bench-removal-feed-", args.sizes,
                 lambda uri, pid, size: measure(uri, pid, size, args.removals), removals=args.removals)


if __name__ == "__main__":
    main()
