"""The job layer's daemons: thin loops over `checking` and `control`.

- job-checker: resolves input data of new jobs (and rechecks staging jobs) and queues them;
- job-watchdog: declares jobs stalled when their pilot is silent and reschedules them, frees
  claims of checkers that died, queues jobs a checker placed but did not queue, and mends the
  task queues' and groups' counters that stayed drifted (`counter_recount.QuietMender`).
"""

from __future__ import annotations

import datetime as dt
import logging

from pymongo.asynchronous.database import AsyncDatabase

from kernel.daemon import Daemon
from kernel.db import Document
from wms import checking, control, jobs
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
        for job in await jobs.silent_jobs(self.db, cutoff, 500):
            silent = (now - job["heartbeat_at"]).total_seconds()
            outcome = await control.declare_stalled(self.db, job, self.config.max_reschedules, silent)
            if outcome != "alive":
                log.warning("job %s: pilot %s silent for %.0fs: %s", job["_id"], job.get("pilot"), silent, outcome)
                handled += 1
        handled += await jobs.clear_stale_claims(self.db, now)
        repair_before = now - dt.timedelta(seconds=self.config.unqueued_repair_s)
        for job in await jobs.unqueued_waiting(self.db, repair_before, 500):
            key = checking.queue_key(job, job.get("sites", []))
            await checking.enqueue(self.db, key, [(job["_id"], job["attempt"])])
            handled += 1
        for counter in await self.mender.look(self.db):
            log.warning("counter %s had drifted from what it counts (a call cut short); mended", counter)
            handled += 1
        return handled
