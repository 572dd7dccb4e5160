"""Matching benchmark: waiting jobs in task queues, pilots at random sites asking for work.

Builds a grid of `--sites` sites (one disk SE each) and `--queues` datasets, each on its own set
of sites and owned by one of two groups, submits `--jobs` jobs through the real submission code
(each reading 3 files of one dataset), places them with the checker's placement rule and queues
them. Then `--pilots` concurrent pilots, each at a random site per request, call the real matcher
until `--matches` jobs are matched. Prints JSON:

- matches per second and request latency percentiles;
- data-locality hit rate (the pilot's site holds every input on disk) of Cairn's matching, and
  of random placement of the same jobs onto the same sequence of pilot requests (baseline);
- duplicates (a job matched twice), which must be 0.

    python bench/matching.py                     # 10k jobs, 20 queues, on embedded FerretDB
    python bench/matching.py --jobs 2000 --matches 1000
    CAIRN_MONGODB_URI=mongodb://... python bench/matching.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient, monitoring

from cairn.components import index_specs
from cairn.embedded_db import start_ferretdb
from catalogue.files import FILES
from catalogue.replicas import get_replicas
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from kernel import event_loop
from kernel.db import Document, ensure_indexes
from kernel.principal import Principal
from wms import input_data, jobs, matching, states, submission, task_queues
from wms.checking import queue_key
from wms.description import JobDescription
from wms.placement import place

FILES_PER_DATASET = 50
INPUTS_PER_JOB = 3


class TimeByCollection(monitoring.CommandListener):
    """Database time per collection while `active`: shows where a match spends its time."""

    def __init__(self) -> None:
        self.active = False
        self.started_at: dict[int, tuple[float, str]] = {}
        self.seconds: dict[str, float] = defaultdict(float)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        if self.active and isinstance(target, str):
            self.started_at[event.request_id] = (time.perf_counter(), f"{event.command_name}:{target}")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event.request_id)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event.request_id)

    def _done(self, request_id: int) -> None:
        begun = self.started_at.pop(request_id, None)
        if begun is not None:
            self.seconds[begun[1]] += time.perf_counter() - begun[0]


def dataset_sites(index: int, sites: list[str]) -> list[str]:
    """Distinct site sets: one site for the first len(sites) datasets, then pairs."""
    n = len(sites)
    first = sites[index % n]
    if index < n:
        return [first]
    return sorted({first, sites[(index + 1 + index // n) % n]})


async def build(db: Any, args: argparse.Namespace, rng: random.Random, se_root: Path) -> dict[str, set[str]]:
    sites = [f"S{i:02d}" for i in range(args.sites)]
    for site in sites:
        await put_storage_element(db, StorageElement(
            name=f"{site}-DISK", site=site, protocols=[Protocol(scheme="file", prefix=str(se_root / site))]))
    files: list[Document] = []
    holders: dict[str, set[str]] = {}
    for d in range(args.queues):
        where = dataset_sites(d, sites)
        for f in range(FILES_PER_DATASET):
            lfn = f"/bench/ds{d:02d}/f{f:03d}"
            holders[lfn] = set(where)
            files.append({"_id": lfn, "size": 1, "adler32": "00000001", "owner": "bench", "group": f"g{d % 2}",
                          "mode": 0o644, "replicas": [{"se": f"{s}-DISK", "url": f"file://{se_root / s}{lfn}",
                                                       "status": "available"} for s in where]})
    await db[FILES].insert_many(files)

    by_group: dict[str, list[JobDescription]] = defaultdict(list)
    for _ in range(args.jobs):
        d = rng.randrange(args.queues)
        lfns = rng.sample([f"/bench/ds{d:02d}/f{f:03d}" for f in range(FILES_PER_DATASET)], INPUTS_PER_JOB)
        by_group[f"g{d % 2}"].append(JobDescription(executable="/bin/true", input_data=lfns))
    for group, descriptions in by_group.items():
        owner = Principal(sub=f"user-{group}", vo="bench", groups=(group,), scopes=frozenset({"jobs.write"}))
        for start in range(0, len(descriptions), 5000):
            await submission.submit(db, owner, descriptions[start:start + 5000])

    # The checker's decisions (real placement rule and queue keys). The jobs are written back
    # whole because FerretDB runs multi-document updates one document at a time (the checker's
    # own per-job writes are indexed lookups on MongoDB).
    catalogue, _ = await get_replicas(db, sorted(holders))
    ses = await input_data.storage_elements(db)
    queued: dict[Any, list[str]] = defaultdict(list)
    placed_jobs = []
    async for job in db[jobs.JOBS].find({"state": states.RECEIVED}):
        placement = place(job["description"]["input_data"], catalogue, ses)
        queued[queue_key(job, placement.sites)].append(task_queues.entry(job["_id"], job["attempt"]))
        job.update({"state": states.WAITING, "sites": placement.sites, "enqueued": True})
        placed_jobs.append(job)
    await db[jobs.JOBS].delete_many({})
    await db[jobs.JOBS].insert_many(placed_jobs)
    for key, entries in queued.items():
        await task_queues.enqueue(db, key, entries)
    return holders


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    uri = args.uri or os.environ.get("CAIRN_MONGODB_URI")
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-"))
    server = None
    if uri is None:
        server = start_ferretdb(tmp / "db")
        uri = server.uri
    timing = TimeByCollection()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True, event_listeners=[timing])
    name = f"bench_{uuid.uuid4().hex[:8]}"
    db = client[name]
    try:
        await ensure_indexes(db, index_specs())
        t0 = time.perf_counter()
        holders = await build(db, args, rng, tmp / "se")
        setup_s = time.perf_counter() - t0
        queues = await task_queues.all_queues(db)
        job_inputs = {j["_id"]: j["description"]["input_data"]
                      async for j in db[jobs.JOBS].find({}, {"description.input_data": 1})}
        sites = [f"S{i:02d}" for i in range(args.sites)]

        requests: list[tuple[str, str | None]] = []
        latencies: list[float] = []
        matched = 0

        async def pilot(n: int) -> None:
            nonlocal matched
            while matched < args.matches:
                site = rng.choice(sites)
                start = time.perf_counter()
                job = await matching.match(db, matching.PilotOffer(pilot=f"bench-pilot-{n}", site=site))
                latencies.append(time.perf_counter() - start)
                requests.append((site, job["_id"] if job else None))
                if job is not None:
                    matched += 1

        timing.active = True
        t1 = time.perf_counter()
        await asyncio.gather(*[pilot(n) for n in range(args.pilots)])
        elapsed = time.perf_counter() - t1
        timing.active = False

        got = [(site, job_id) for site, job_id in requests if job_id is not None]
        ids = [job_id for _, job_id in got]

        def local(site: str, job_id: str) -> bool:
            return all(site in holders[lfn] for lfn in job_inputs[job_id])

        cairn_hits = sum(local(site, job_id) for site, job_id in got)
        # Baseline: the same pilot requests, each given a random job of the same pool, data ignored.
        pool = list(job_inputs)
        baseline_rng = random.Random(args.seed + 1)
        baseline_rng.shuffle(pool)
        random_hits = sum(local(site, pool[i]) for i, (site, _) in enumerate(got))
        in_db = await db[jobs.JOBS].count_documents({"state": states.MATCHED})
        latencies.sort()
        return {
            "backend": "mongodb" if args.uri or os.environ.get("CAIRN_MONGODB_URI") else "ferretdb-1.24-sqlite",
            "jobs": args.jobs,
            "task_queues": len(queues),
            "sites": args.sites,
            "concurrent_pilots": args.pilots,
            "setup_s": round(setup_s, 2),
            "match_requests": len(requests),
            "matches": len(got),
            "elapsed_s": round(elapsed, 2),
            "matches_per_s": round(len(got) / elapsed, 1),
            "requests_per_s": round(len(requests) / elapsed, 1),
            "latency_ms": {"p50": round(1000 * statistics.median(latencies), 2),
                           "p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2),
                           "max": round(1000 * latencies[-1], 2)},
            "locality_hit_rate": {"cairn": round(cairn_hits / len(got), 4),
                                  "random_placement": round(random_hits / len(got), 4)},
            "db_ms_per_request_by_command": {
                name: round(1000 * seconds / len(requests), 2)
                for name, seconds in sorted(timing.seconds.items(), key=lambda item: -item[1])
            },
            "duplicates": len(ids) - len(set(ids)),
            "jobs_in_state_matched": in_db,
        }
    finally:
        await client.drop_database(name)
        await client.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--matches", type=int, default=2000, help="stop after this many matches")
    parser.add_argument("--pilots", type=int, default=4, help="concurrent pilots")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--uri", help="MongoDB URI (default: $CAIRN_MONGODB_URI, else an embedded FerretDB)")
    args = parser.parse_args()
    args.matches = min(args.matches, args.jobs)
    print(json.dumps(event_loop.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
