"""Benchmark: what one claim of the next transfer requests costs as the queue grows.

    python bench/claims.py [--queued 1000,10000,100000] [--done 10000] [--claims 5] [--limit 256]

For each queue size, in a database of its own (FerretDB in a temp dir unless $CAIRN_MONGODB_URI):
QUEUED transfer requests queued, DONE more that ended (the history a queue keeps), then
- `claim`: CLAIMS calls of `transfers.requests.claim_many` (LIMIT each), the workers' path: one
  read per state under `kernel.db.INDEX_ORDER`, which Cairn's FerretDB build answers from the
  `requests_claim` index;
- `in_memory_sort` (baseline, same database, same run): CLAIMS claims of LIMIT by
  `kernel.claims.claim_many` with the filter the workers used before (both states in one `$or`,
  no comment), which the database answers by reading every open request and sorting them.
Each call's wall time and the database's CPU per call (FerretDB's, from /proc). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient  # noqa: E402
from pymongo.asynchronous.database import AsyncDatabase  # noqa: E402

from bench.harness import cpu_seconds  # noqa: E402
from cairn.embedded_db import start_ferretdb  # noqa: E402
from kernel import claims  # noqa: E402
from kernel.db import Document, ensure_indexes  # noqa: E402
from transfers import requests as rq  # noqa: E402

SUBMIT_BATCH = 10_000


async def fill(db: AsyncDatabase[Document], queued: int, done: int) -> None:
    """`done` requests that ended, then `queued` open ones (submitted in batches, as a bulk request is)."""
    for group, count in (("done", done), ("open", queued)):
        for start in range(0, count, SUBMIT_BATCH):
            items = [{"lfn": f"/bench/{group}/f{i:07d}", "dest_se": "DEST"}
                     for i in range(start, min(count, start + SUBMIT_BATCH))]
            result = await rq.submit_transfers(db, items, requester="bench")
            if group == "done":
                await db[rq.REQUESTS].update_many({"_id": {"$in": list(result["successful"].values())}},
                                                  {"$set": {"state": "done"}, "$unset": {"active_key": ""}})


async def in_memory_sort_claim(db: AsyncDatabase[Document], worker: str, limit: int) -> list[Document]:
    """The claim as the workers made it before: both states in one `$or`, sorted by the database."""
    at = rq.now()
    claimable = {"kind": {"$in": ["transfer"]},
                 "$or": [{"state": "queued", "not_before": {"$lte": at}}, {"state": "active"}]}
    return await claims.claim_many(db[rq.REQUESTS], worker, claimable, lease_s=600, sort=rq.CLAIM_ORDER,
                                   limit=limit)


async def timed_claims(db: AsyncDatabase[Document], db_pid: int | None, how: str, count: int,
                       limit: int) -> dict[str, Any]:
    seconds: list[float] = []
    cpu_before = cpu_seconds(db_pid)
    for n in range(count):
        began = time.perf_counter()
        if how == "claim":
            got = await rq.claim_many(db, f"bench-{how}-{n}", kinds=["transfer"], lease_s=600, limit=limit)
        else:
            got = await in_memory_sort_claim(db, f"bench-{how}-{n}", limit)
        seconds.append(time.perf_counter() - began)
        if len(got) != limit:
            raise SystemExit(f"{how}: claimed {len(got)} of {limit}")
    return {"calls": count, "median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4),
            "db_cpu_s_per_call": round((cpu_seconds(db_pid) - cpu_before) / count, 4) if db_pid else None}


async def one_size(uri: str, db_pid: int | None, queued: int, args: argparse.Namespace) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    db = client[f"bench_claims_{queued}"]
    try:
        await ensure_indexes(db, rq.INDEXES)
        # Both runs take CLAIMS x LIMIT requests: queue that many more, so each sees ~QUEUED.
        began = time.perf_counter()
        await fill(db, queued + 2 * args.claims * args.limit, args.done)
        filled = time.perf_counter() - began
        claim = await timed_claims(db, db_pid, "claim", args.claims, args.limit)
        baseline = await timed_claims(db, db_pid, "in_memory_sort", args.claims, args.limit)
        return {"queued": queued, "done": args.done, "limit": args.limit, "fill_s": round(filled, 1),
                "claim": claim, "in_memory_sort": baseline,
                "speedup_median": round(baseline["median_s"] / claim["median_s"], 1)}
    finally:
        await client.drop_database(db.name)
        await client.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    uri = os.environ.get("CAIRN_MONGODB_URI")
    server = None
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-claims-"))
    if uri is None:
        server = start_ferretdb(scratch / "db")
        uri = server.uri
    try:
        sizes = [await one_size(uri, server.process.pid if server else None, int(n), args)
                 for n in args.queued.split(",")]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"benchmark": "claims", "database": "CAIRN_MONGODB_URI" if server is None else "FerretDB 1.24 (SQLite)",
            "sizes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", default="1000,10000,100000", help="queue sizes, comma-separated")
    parser.add_argument("--done", type=int, default=10_000, help="ended requests in the history")
    parser.add_argument("--claims", type=int, default=5)
    parser.add_argument("--limit", type=int, default=256)
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=1))


if __name__ == "__main__":
    main()
