"""Benchmark: what one claim of a queue's next entries costs as the queue grows.

    python bench/claims.py [--queue transfers|jobs|staging] [--queued 1000,10000,100000] [--done 10000]
                           [--claims 5] [--limit 256]

For each queue size, in a database of its own (FerretDB in a temp dir unless $CAIRN_MONGODB_URI):
QUEUED transfer requests queued, DONE more that ended (the history a queue keeps), then
- `claim`: CLAIMS calls of `transfers.request_claims.claim_many` (LIMIT each), the workers' path: one
  read per state under `kernel.db.INDEX_ORDER`, which Cairn's FerretDB build answers from the
  `requests_claim` index;
- `in_memory_sort` (baseline, same database, same run): CLAIMS claims of LIMIT by
  `kernel.claims.claim_many` with the filter the workers used before (both states in one `$or`,
  no comment), which the database answers by reading every open request and sorting them.
The same for the job checker's claims (`--queue jobs`): QUEUED jobs `received` beside DONE `done`
ones, claimed in batches of LIMIT by `wms.checker_claims.claim_batch` (`jobs_by_state_recheck` under
INDEX_ORDER) and by the same claim without the comment; and for the stager's polls (`--queue
staging`): QUEUED stage requests `staging` with their polls due, claimed by
`transfers.request_claims.claim_staging_many` (`requests_stage_poll`) and without the comment. Each
call's wall time and the database's CPU per call (FerretDB's, from /proc). Prints JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient  # noqa: E402
from pymongo.asynchronous.database import AsyncDatabase  # noqa: E402

from bench.harness import cpu_seconds  # noqa: E402
from cairn.embedded_db import start_ferretdb  # noqa: E402
from kernel import claims, event_loop  # noqa: E402
from kernel.db import Document, ensure_indexes  # noqa: E402
from transfers import queueing  # noqa: E402
from transfers import request_claims as rc  # noqa: E402
from transfers import requests as rq  # noqa: E402
from wms import checker_claims, jobs, states  # noqa: E402

SUBMIT_BATCH = 10_000


async def fill(db: AsyncDatabase[Document], queued: int, done: int) -> None:
    """`done` requests that ended, then `queued` open ones (submitted in batches, as a bulk request is)."""
    for group, count in (("done", done), ("open", queued)):
        for start in range(0, count, SUBMIT_BATCH):
            items = [{"lfn": f"/bench/{group}/f{i:07d}", "dest_se": "DEST"}
                     for i in range(start, min(count, start + SUBMIT_BATCH))]
            result = await queueing.submit_transfers(db, items, requester="bench")
            if group == "done":
                await db[rq.REQUESTS].update_many({"_id": {"$in": list(result["successful"].values())}},
                                                  {"$set": {"state": "done"}, "$unset": {"active_key": ""}})
    await rc.give_turns(db)  # once per database (every request here has a turn): not a claim's cost


async def in_memory_sort_claim(db: AsyncDatabase[Document], worker: str, limit: int) -> list[Document]:
    """The claim as the workers made it before: both states in one `$or`, sorted by the database."""
    at = rq.now()
    claimable = {"kind": {"$in": ["transfer"]},
                 "$or": [{"state": "queued", "not_before": {"$lte": at}}, {"state": "active"}]}
    return await claims.claim_many(db[rq.REQUESTS], worker, claimable, lease_s=600, sort=rc.CLAIM_ORDER,
                                   limit=limit)


async def fill_jobs(db: AsyncDatabase[Document], received: int, done: int) -> None:
    """Job records as far as the checker's claim reads them (state, recheck_at, history, lease)."""
    at = rq.now()
    for start in range(0, received + done, SUBMIT_BATCH):
        await db[jobs.JOBS].insert_many([
            {"_id": f"bench-{i:07d}", "state": states.DONE if i < done else states.RECEIVED,
             "recheck_at": at + dt.timedelta(milliseconds=i), "owner": "bench", "lease_owner": None,
             "lease_expires": None, "history": [{"state": states.RECEIVED, "time": at, "reason": "submitted"}]}
            for i in range(start, min(received + done, start + SUBMIT_BATCH))])


async def fill_staging(db: AsyncDatabase[Document], staging: int, done: int) -> None:
    """Stage requests in `staging` with their polls due (as the stager leaves them), beside ended ones."""
    await fill(db, 0, done)
    at = rq.now()
    for start in range(0, staging, SUBMIT_BATCH):
        result = await queueing.submit(db, "stage", [{"lfn": f"/bench/tape/f{i:07d}", "dest_se": "TAPE"}
                                                     for i in range(start, min(staging, start + SUBMIT_BATCH))],
                                       requester="bench")
        await db[rq.REQUESTS].update_many(
            {"_id": {"$in": list(result["successful"].values())}},
            {"$set": {"state": "staging", "stage": {"se": "TAPE", "request_id": "bench", "next_poll": at}}})


def claimer(db: AsyncDatabase[Document], how: str, limit: int) -> Callable[[str], Awaitable[list[Document]]]:
    """One claim of the kind `how` names, by a worker of the given name."""
    received, checking = states.RECEIVED, states.CHECKING
    return {
        "claim": lambda worker: rc.claim_many(db, worker, kinds=["transfer"], lease_s=600, limit=limit),
        "in_memory_sort": lambda worker: in_memory_sort_claim(db, worker, limit),
        "job_claim": lambda worker: checker_claims.claim_batch(db, received, checking, worker, limit),
        "job_in_memory_sort": lambda worker: claims.claim_many(
            db[jobs.JOBS], worker, {"state": received}, lease_s=checker_claims.CHECK_LEASE_S, sort=[("recheck_at", 1)],
            limit=limit, update={"$set": {"state": checking}}),
        "staging_claim": lambda worker: rc.claim_staging_many(db, worker, lease_s=600, limit=limit),
        "staging_in_memory_sort": lambda worker: claims.claim_many(
            db[rq.REQUESTS], worker, {"state": "staging", "stage.next_poll": {"$lte": rq.now()}}, lease_s=600,
            sort=[("stage.next_poll", 1)], limit=limit),
    }[how]


async def timed_claims(db: AsyncDatabase[Document], db_pid: int | None, how: str, count: int,
                       limit: int) -> dict[str, Any]:
    seconds: list[float] = []
    cpu_before = cpu_seconds(db_pid)
    claim = claimer(db, how, limit)
    for n in range(count):
        began = time.perf_counter()
        got = await claim(f"bench-{how}-{n}")
        seconds.append(time.perf_counter() - began)
        if len(got) != limit:
            raise SystemExit(f"{how}: claimed {len(got)} of {limit}")
    return {"calls": count, "median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4),
            "db_cpu_s_per_call": round((cpu_seconds(db_pid) - cpu_before) / count, 4) if db_pid else None}


async def one_size(uri: str, db_pid: int | None, queued: int, args: argparse.Namespace) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    db = client[f"bench_claims_{queued}"]
    what = {"transfers": "", "jobs": "job_", "staging": "staging_"}[args.queue]
    try:
        await ensure_indexes(db, jobs.INDEXES if args.queue == "jobs" else rq.INDEXES)
        # Both runs take CLAIMS x LIMIT: queue that many more, so each sees ~QUEUED.
        began = time.perf_counter()
        filler = {"transfers": fill, "jobs": fill_jobs, "staging": fill_staging}[args.queue]
        await filler(db, queued + 2 * args.claims * args.limit, args.done)
        filled = time.perf_counter() - began
        claim = await timed_claims(db, db_pid, f"{what}claim", args.claims, args.limit)
        baseline = await timed_claims(db, db_pid, f"{what}in_memory_sort", args.claims, args.limit)
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
    return {"benchmark": f"claims of {args.queue}",
            "database": "CAIRN_MONGODB_URI" if server is None else "FerretDB 1.24 (SQLite)",
            "sizes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", default="1000,10000,100000", help="queue sizes, comma-separated")
    parser.add_argument("--done", type=int, default=10_000, help="ended requests in the history")
    parser.add_argument("--claims", type=int, default=5)
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--queue", choices=("transfers", "jobs", "staging"), default="transfers",
                        help="whose claims: transfer workers', the job checker's or the stager's polls")
    print(json.dumps(event_loop.run(run(parser.parse_args())), indent=1))


if __name__ == "__main__":
    main()
