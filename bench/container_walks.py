"""Benchmark: the walks through containers and the rules' triggers, as the catalogue grows.

    python -m bench.container_walks [--sizes 10000,100000] [--calls 20]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI) and, per size N,
in a fresh database with the server's indexes: N datasets held by N/10 containers, those by N/100
top containers (container links), and one rule on each dataset (N rules). Then, each against the
same work done by one `$in` query per level (the way before `kernel.db.find_by_values`: on the
embedded database a read of every link, or every rule, per query), in the same run:
- triggers: CALLS `rules.triggers.content_changed` on one dataset each (what the evaluator does
  for every attach it reads: the containers above, then the rules on all of them marked dirty);
- up: `linked_dids` upwards from one dataset (the containers holding it, and theirs);
- down: `linked_dids` downwards from one top container (its 10 containers, their 100 datasets).
Prints JSON: seconds and database CPU-seconds per phase, and each phase over its `$in` baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import cpu_seconds, emit_by_size, scratch_database
from catalogue.dataset_contents import CONTAINER_CHILDREN, linked_dids
from catalogue.dataset_contents import INDEXES as CONTENT_INDEXES
from kernel.db import Document, ensure_indexes, increment
from rules.store import INDEXES as RULE_INDEXES
from rules.store import RULES
from rules.triggers import content_changed


async def filled(db: AsyncDatabase[Document], size: int) -> None:
    await ensure_indexes(db, [*CONTENT_INDEXES, *RULE_INDEXES])
    links = [(f"vo:c{i // 10}", f"vo:d{i}") for i in range(size)] + \
            [(f"vo:top{i // 10}", f"vo:c{i}") for i in range(size // 10)]
    rules = [{"_id": uuid.uuid4().hex, "did": f"vo:d{i}", "state": "ok", "dirty": False, "generation": 0}
             for i in range(size)]
    for start in range(0, max(len(links), len(rules)), 10_000):
        if part := links[start:start + 10_000]:
            await db[CONTAINER_CHILDREN].insert_many([{"_id": f"{c}\x00{d}", "container": c, "child": d}
                                                      for c, d in part])
        if part_rules := rules[start:start + 10_000]:
            await db[RULES].insert_many(part_rules)


async def walk_by_in(db: AsyncDatabase[Document], starts: Iterable[str], *, down: bool) -> set[str]:
    """The walk with one `$in` query per level."""
    near, far = ("container", "child") if down else ("child", "container")
    seen: set[str] = set()
    level = set(starts)
    while level:
        links = await db[CONTAINER_CHILDREN].find({near: {"$in": sorted(level)}}, {far: 1}).to_list()
        level = {link[far] for link in links} - seen
        seen |= level
    return seen


async def triggered_by_in(db: AsyncDatabase[Document], did: str) -> int:
    affected = {did} | await walk_by_in(db, [did], down=False)
    result = await db[RULES].update_many({"did": {"$in": sorted(affected)}},
                                         {"$set": {"dirty": True}, **increment({"generation": 1})})
    return result.modified_count


async def timed(pid: int | None, action: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    cpu, began = cpu_seconds(pid), time.perf_counter()
    result = await action()
    return round(time.perf_counter() - began, 4), round(cpu_seconds(pid) - cpu, 3), result


async def measure(uri: str, pid: int | None, size: int, calls: int) -> dict[str, Any]:
    async with scratch_database(uri, "bench_walks") as db:
        await filled(db, size)
        dids = [f"vo:d{(i * 7919) % size}" for i in range(calls)]
        phases: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
            "triggers": (lambda: asyncio.gather(*(content_changed(db, [d]) for d in dids)),
                         lambda: asyncio.gather(*(triggered_by_in(db, d) for d in dids))),
            "up": (lambda: linked_dids(db, [dids[0]], down=False), lambda: walk_by_in(db, [dids[0]], down=False)),
            "down": (lambda: linked_dids(db, ["vo:top3"], down=True), lambda: walk_by_in(db, ["vo:top3"], down=True)),
        }
        out: dict[str, Any] = {}
        for name, (now, before) in phases.items():
            seconds, cpu, found = await timed(pid, now)
            base_seconds, base_cpu, base_found = await timed(pid, before)
            if name != "triggers" and found[0] != base_found:
                raise RuntimeError(f"{name}: the walks disagree")
            if name == "triggers" and found != base_found:
                raise RuntimeError("triggers: the rules marked differ")
            out[name] = {"seconds": seconds, "db_cpu_s": cpu, "by_in_seconds": base_seconds, "by_in_db_cpu_s": base_cpu,
                         "over_by_in": round(seconds / base_seconds, 3) if base_seconds else None}
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="datasets (and rules) per run (10000,100000)")
    parser.add_argument("--calls", type=int, default=20, help="content_changed calls per size (20)")
    args = parser.parse_args()
    emit_by_size("cairn-bench-walks-", args.sizes, lambda uri, pid, size: measure(uri, pid, size, args.calls),
                 calls=args.calls)


if __name__ == "__main__":
    main()
