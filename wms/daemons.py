"""The job layer's daemons: thin loops over `checking` and `control`.

- job-checker: resolves input data of new jobs (and rechecks staging jobs) and queues them;
- job-watchdog: declares jobs stalled when their pilot is silent and reschedules them, frees
  claims of checkers that died, settles waiting jobs whose attempt's claimer stopped before
  moving them (`control.settle_stale_claims`), queues jobs a checker placed but did not queue, and mends the
  task queues' and groups' counters that stayed drifted (`counter_recount.QuietMender`).

Each job's work in a pass is isolated (`kernel.daemon.one_of_many`): a job whose processing
raises fails alone with the reason (`wms.unprocessable`) and the pass goes on; a database outage
stops the pass and the daemon backs off.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from pymongo.asynchronous.database import AsyncDatabase

from kernel.daemon import Daemon, one_of_many
from kernel.db import Document
from wms import checker_claims, checking, control, job_reads, jobs, stage_requests, unprocessable
from wms.config import WmsSettings
from wms.counter_recount import QuietMender

log = logging.getLogger("cairn.wms")


class JobChecker(Daemon):
    name = "job-checker"
    idle_sleep_s = 1.0

    def __init__(self, db: AsyncDatabase[Document], config: WmsSettings) -> None:
        super().__init__()
        self.db = db
        self.config = config

    async def run_once(self) -> int:
        return await checking.check_batch(self.db, self.config, self.worker)


class JobWatchdog(Daemon):
    name = "job-watchdog"

    def __init__(self, db: AsyncDatabase[Document], config: WmsSettings) -> None:
        super().__init__()
        self.db = db
        self.config = config
        self.idle_sleep_s = min(10.0, config.stalled_after_s / 3)
        self.mender = QuietMender(config.counter_mend_s)

    async def run_once(self) -> int:
        now = jobs.now()
        handled = 0
        cutoff = now - dt.timedelta(seconds=self.config.stalled_after_s)
        for job in await job_reads.silent_jobs(self.db, cutoff, 500):
            handled += await self.isolated(self.stall(job, now), job, unprocessable.fail_at_pilot)
        handled += await checker_claims.clear_stale_claims(self.db, now)
        handled += await control.settle_stale_claims(self.db, now)
        repair_before = now - dt.timedelta(seconds=self.config.unqueued_repair_s)
        for job in await job_reads.unqueued_waiting(self.db, repair_before, 500):
            handled += await self.isolated(self.requeue(job), job, unprocessable.fail_unqueued)
        for job in await stage_requests.left_holding(self.db, 500):  # a withdrawal cut short
            await stage_requests.withdraw_left(self.db, job)
            handled += 1
        for counter in await self.mender.look(self.db):
            log.warning("counter %s had drifted from what it counts (a call cut short); mended", counter)
            handled += 1
        return handled

    async def stall(self, job: Document, now: dt.datetime) -> int:
        """Declare a job whose pilot went silent stalled (then rescheduled or failed)."""
        silent = (now - job["heartbeat_at"]).total_seconds()
        outcome = await control.declare_stalled(self.db, job, self.config.max_reschedules, silent)
        if outcome == "alive":
            return 0
        log.warning("job %s: pilot %s silent for %.0fs: %s", job["_id"], job.get("pilot"), silent, outcome)
        return 1

    async def requeue(self, job: Document) -> int:
        """Queue a waiting job its checker placed but did not queue (it died in between)."""
        await checking.enqueue(self.db, checking.queue_key(job, job.get("sites", [])), [(job["_id"], job["attempt"])])
        return 1

    async def isolated(self, work: Awaitable[int], job: Document,
                       fail: Callable[[AsyncDatabase[Document], Document, str], Awaitable[None]]) -> int:
        """`work` on one job; when it raised (not an outage), the job fails with why (`fail`)."""
        done, why = await one_of_many(work, f"{self.name}: job {job['_id']}", log)
        if why is None:
            return done or 0
        await fail(self.db, job, unprocessable.reason(self.name, why))
        return 1
