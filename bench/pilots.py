"""Pilot benchmark: short jobs through the pilot factory on a one-node Slurm cluster, against the
same jobs submitted directly with `sbatch --array` (the baseline a user would pick).

Starts the database (bench.harness), the API in process, and a one-node Slurm cluster
(tests.fixtures.slurm, 8 slots on this machine's cores). Submits `--jobs` jobs that run
`/bin/true` at site SLURM-SITE, runs the job checker and the pilot factory (queue: 8 waiting,
8 running, 8 per cycle, pilots leave after 2 s idle) until every job is done, then submits the
same number of `/bin/true` array tasks and waits for them. Prints JSON: jobs/minute from
submission to done for both, pilots used, jobs per pilot, and the factory's own time per pilot
submitted (writing the intent, issuing the token, sbatch, recording the batch id).

    python bench/pilots.py               # 200 jobs (the issue's 500: --jobs 500)
    python bench/pilots.py --jobs 50
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bench.harness import emit, testbed
from cairn.components import index_specs
from cairn.embedded_db import free_port
from cairn.sdk import Client
from cairn.server import build_app
from catalogue.site_queues import SiteQueue, put_queue
from catalogue.sites import Site, put_site
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from kernel import event_loop
from kernel.db import ensure_indexes, get_database
from kernel.settings import load_settings
from kernel.web import ISSUER
from tests.fixtures.slurm import SlurmCluster, one_node_cluster
from wms import checking, job_reads, pilot_records
from wms.batch.interface import BatchBackend, QueueConfig
from wms.config import WmsSettings
from wms.pilot_factory import FactorySettings, PilotFactory

SITE = "SLURM-SITE"
TIMEOUT_S = 1800


class TimedFactory(PilotFactory):
    """The factory, timing its submissions (all its own work per pilot, sbatch included)."""

    submit_s = 0.0
    submitted = 0

    async def submit(self, backend: BatchBackend, queue: QueueConfig, count: int) -> int:
        started = time.perf_counter()
        done = await super().submit(backend, queue, count)
        self.submit_s += time.perf_counter() - started
        self.submitted += done
        return done


async def through_pilots(settings: Any, count: int, app: web.Application, url: str) -> dict[str, Any]:
    db = get_database(settings)
    await ensure_indexes(db, index_specs())
    await put_site(db, Site(name=SITE))
    await put_storage_element(db, StorageElement(name=f"{SITE}-DISK", site=SITE, protocols=[
        Protocol(scheme="file", prefix=str(settings.var_dir / "se"))]))
    await put_queue(db, SiteQueue(name="bench", site=SITE, backend="slurm", partition="debug", memory_mb=1024,
                                  max_waiting=8, max_running=8))
    factory = TimedFactory(db, settings, FactorySettings(api_url=url, work_dir=settings.var_dir / "pilots",
                                                         per_cycle=8, poll_s=0.5, pilot_idle_s=2), app[ISSUER])
    config = WmsSettings(staging_recheck_s=1)
    token = app[ISSUER].issue(sub="bench", vo="cta", groups=("cta",), scopes=("jobs.read", "jobs.write"))
    started = time.perf_counter()
    async with Client(url, token) as client:
        ids: list[str] = []
        for first in range(0, count, 1000):
            ids += await client.submit_jobs([{"executable": "/bin/true", "requirements": {"sites": [SITE]}}
                                             for _ in range(first, min(count, first + 1000))])

    async def checker() -> None:
        while True:
            if not await checking.check_batch(db, config, "bench-checker"):
                await asyncio.sleep(0.3)

    tasks = [asyncio.create_task(factory.run()), asyncio.create_task(checker())]
    try:
        while True:
            counts = await job_reads.count_by_state(db, None)
            if counts.get("done", 0) + counts.get("failed", 0) >= count:
                break
            if time.perf_counter() - started > TIMEOUT_S:
                raise RuntimeError(f"jobs not done after {TIMEOUT_S}s: {counts}")
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - started
        # The pilots leave once idle; the baseline needs their slots.
        while any(p["state"] in ("submitting", "waiting", "running")
                  for p in await pilot_records.list_pilots(db, site=SITE, limit=100_000)):
            if time.perf_counter() - started > TIMEOUT_S:
                raise RuntimeError("pilots still running")
            await asyncio.sleep(0.5)
    finally:
        factory.stop()
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    pilots = await pilot_records.list_pilots(db, site=SITE, limit=100_000)
    return {"jobs": count, "done": counts.get("done", 0), "seconds": round(elapsed, 1),
            "jobs_per_minute": round(count / elapsed * 60, 1), "pilots": len(pilots),
            "jobs_per_pilot": round(count / max(1, len(pilots)), 1),
            "factory_ms_per_pilot": round(factory.submit_s / max(1, factory.submitted) * 1000, 1)}


async def through_array(cluster: SlurmCluster, count: int, scratch: Path) -> dict[str, Any]:
    started = time.perf_counter()
    out = await asyncio.to_thread(cluster.run, "sbatch", "--parsable", f"--array=0-{count - 1}",
                                  f"--output={scratch}/array-%a.log", "--mem=1024M", "--wrap", "/bin/true")
    array_id = out.strip().split(";")[0]
    while True:
        listing = await asyncio.to_thread(cluster.run, "squeue", "-h", "-r", "-o", "%i")
        if not any(line.startswith(f"{array_id}_") for line in listing.splitlines()):
            break
        if time.perf_counter() - started > TIMEOUT_S:
            raise RuntimeError(f"array {array_id} not done after {TIMEOUT_S}s")
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    return {"jobs": count, "seconds": round(elapsed, 1), "jobs_per_minute": round(count / elapsed * 60, 1)}


async def main(count: int) -> None:
    with testbed("cairn-bench-pilots-") as bed, one_node_cluster() as cluster:
        os.environ["SLURM_CONF"] = str(cluster.conf)
        port = free_port()
        settings = load_settings(mongodb_uri=bed.database_uri, database=f"bench_{uuid.uuid4().hex[:8]}",
                                 var_dir=bed.scratch / "var", api_port=port)
        app = build_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            pilots = await through_pilots(settings, count, app, f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()
        array = await through_array(cluster, count, bed.scratch)
    emit({"benchmark": "pilots", "database": bed.database_kind, "slurm_slots": 8, "pilot_factory": pilots,
          "sbatch_array": array,
          "factory_vs_array": round(pilots["jobs_per_minute"] / array["jobs_per_minute"], 2)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    event_loop.run(main(args.jobs))
