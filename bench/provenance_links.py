"""Benchmark: what one link call costs and answers, by how many ancestors the file holds.

    python -m bench.provenance_links [--held 0,5000,9990] [--rounds 5]

Starts the database (FerretDB in a scratch directory unless $CAIRN_MONGODB_URI). For each HELD,
ROUNDS files each holding HELD ancestors are given 10 more (and 2 they hold) by one
`link_ancestors` each; prints JSON per HELD: median seconds, the answer's bytes and the bytes
the database replied with per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on the path and its rules.py hide the rules package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.harness import emit, testbed
from bench.provenance import Replies
from bench.removals import ADMIN
from catalogue.files import register_files
from catalogue.namespace import mkdir
from catalogue.provenance import add_ancestor_links, link_ancestors
from kernel import event_loop
from kernel.db import Document


async def _calls(db: AsyncDatabase[Document], replies: Replies, held: int, rounds: int) -> dict[str, Any]:
    top = f"/bench/h{held}"
    lfns = [f"{top}/f{i}" for i in range(rounds)]
    await mkdir(db, ADMIN, top, parents=True)
    done = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1, "adler32": "00000001"} for lfn in lfns])
    assert not done["failed"], done["failed"]
    stored = [f"{top}/raw/r{j:05d}" for j in range(held)]
    if held:
        await add_ancestor_links(db, dict.fromkeys(lfns, stored))
    seconds, answer_bytes, reply_bytes = [], [], []
    for lfn in lfns:
        given = [*stored[:2], *(f"{top}/new/{lfn[-1]}{j}" for j in range(10))]
        replies.bytes, began = 0, time.perf_counter()
        answer = await link_ancestors(db, lfn, given)
        seconds.append(time.perf_counter() - began)
        answer_bytes.append(len(json.dumps(answer)))
        reply_bytes.append(replies.bytes)
    return {"held": held, "seconds": round(statistics.median(seconds), 4),
            "answer_bytes": int(statistics.median(answer_bytes)), "reply_bytes": int(statistics.median(reply_bytes))}


async def measure(uri: str, helds: list[int], rounds: int) -> list[dict[str, Any]]:
    replies = Replies()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True, event_listeners=[replies])
    db = client[f"bench_links_{uuid.uuid4().hex[:8]}"]
    try:
        return [await _calls(db, replies, held, rounds) for held in helds]
    finally:
        await client.drop_database(db.name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held", default="0,5000,9990", help="ancestors the files hold (0,5000,9990)")
    parser.add_argument("--rounds", type=int, default=5, help="calls per HELD (5); medians reported")
    args = parser.parse_args()
    with testbed("cairn-bench-links-") as bed:
        result = event_loop.run(measure(bed.database_uri, [int(h) for h in args.held.split(",")], args.rounds))
        emit({"database": bed.database_kind, "calls": result})


if __name__ == "__main__":
    main()
