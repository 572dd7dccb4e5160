"""Benchmark: what an ancestors walk reads and costs, within its bound and past it.

    python -m bench.provenance [--within 50000] [--past 300000] [--rounds 3]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI). Two files, each
with parents of 10,000 ancestors apiece (what one link call may add): WITHIN ancestors at depth
2 (walked whole), and PAST of them (more than `provenance.MAX_RESULTS`: the walk is refused).
Walks each to depth 3 ROUNDS times and prints JSON: median seconds, database CPU seconds, and
the ancestor names and reply bytes the database sent per walk.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bson
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import cpu_seconds, emit, testbed
from bench.removals import ADMIN
from catalogue.files import register_files
from catalogue.namespace import mkdir
from catalogue.provenance import add_ancestor_links, record_production, walk
from kernel import event_loop
from kernel.db import Document
from kernel.errors import InvalidInput

PER_PARENT = 10_000


class Replies(monitoring.CommandListener):
    """Ancestor names and bytes in the database's cursor replies."""

    def __init__(self) -> None:
        self.names = self.bytes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Nothing to count before the reply (the listener interface asks for it)."""

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") or {}
        batch = cursor.get("firstBatch", []) + cursor.get("nextBatch", [])
        self.bytes += sum(len(bson.encode(doc)) for doc in batch)
        for doc in batch:
            names = doc.get("ancestors")
            self.names += len(names) if isinstance(names, list) else int(names is not None)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A failed command answered no names."""


async def _file_with(db: AsyncDatabase[Document], top: str, ancestors: int) -> str:
    parents = [f"{top}/p{i:03d}" for i in range(-(-ancestors // PER_PARENT))]
    done = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1, "adler32": "00000001"}
                                            for lfn in [f"{top}/f", *parents]])
    assert not done["failed"], done["failed"]
    await add_ancestor_links(db, {f"{top}/f": parents})
    for i, parent in enumerate(parents):
        made_from = [f"{top}/raw/{i:03d}/r{j:05d}" for j in range(PER_PARENT)]
        await record_production(db, [parent], made_from, {"job": f"{top}-{i}", "attempt": 1})
    return f"{top}/f"


async def _walks(db: AsyncDatabase[Document], replies: Replies, pid: int | None, lfn: str,
                 rounds: int) -> dict[str, Any]:
    seconds, cpu, listed, refused = [], [], 0, False
    replies.names = replies.bytes = 0
    for _ in range(rounds):
        used, began = cpu_seconds(pid), time.perf_counter()
        try:
            listed = len(await walk(db, lfn, "ancestors", 3))
        except InvalidInput:
            refused = True
        seconds.append(time.perf_counter() - began)
        cpu.append(cpu_seconds(pid) - used)
    return {"seconds": round(statistics.median(seconds), 3), "database_cpu_s": round(statistics.median(cpu), 3),
            "names_read": replies.names // rounds, "reply_mb": round(replies.bytes / rounds / 1e6, 2),
            "listed": listed, "refused": refused}


async def measure(uri: str, pid: int | None, within: int, past: int, rounds: int) -> dict[str, Any]:
    replies = Replies()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True, event_listeners=[replies])
    db = client[f"bench_provenance_{uuid.uuid4().hex[:8]}"]
    try:
        await mkdir(db, ADMIN, "/bench", parents=True)
        files = {"within": await _file_with(db, "/bench/within", within),
                 "past": await _file_with(db, "/bench/past", past)}
        return {name: {"ancestors": count, **await _walks(db, replies, pid, files[name], rounds)}
                for name, count in (("within", within), ("past", past))}
    finally:
        await client.drop_database(db.name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--within", type=int, default=50_000, help="ancestors of the walked file (50000)")
    parser.add_argument("--past", type=int, default=300_000, help="ancestors of the refused file (300000)")
    parser.add_argument("--rounds", type=int, default=3, help="walks of each (3); medians reported")
    args = parser.parse_args()
    with testbed("cairn-bench-provenance-") as bed:
        result = event_loop.run(measure(bed.database_uri, bed.database_pid, args.within, args.past, args.rounds))
        emit({"database": bed.database_kind, **result})


if __name__ == "__main__":
    main()
