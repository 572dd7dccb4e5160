"""The pilot factory (`cairn daemon pilot-factory`): keeps each site's batch queues supplied with
pilots while jobs wait for that site.

Per queue of the site registry (`catalogue.site_queues`), under the named lease
`pilot-factory:SITE:QUEUE` (so any number of factories share the queues, one per queue at a time):
1. reconcile: pilots left `submitting` by a factory that died are looked up in the batch system
   by name and adopted, or failed once the submission can no longer be in flight;
2. follow: the batch state of every waiting and running pilot is read in one call; a pilot the
   batch system no longer knows is `lost` after `lost_after_s`;
3. submit: as many pilots as the waiting jobs this queue could run call for, so that no more than
   max_waiting pilots wait and no more than max_running are waiting or running, at most
   `per_cycle` per cycle; each pilot's document is written
   (the intent) before the batch system is asked, so a restart never submits twice.

Each pilot gets its own short-lived token with scope jobs.pilot only, bound to its site and its
name (claims `cairn_site`, `cairn_pilot`), never the factory's credentials.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.site_queues import SiteQueue, list_queues
from kernel import lease
from kernel.daemon import Daemon, retried
from kernel.db import Document
from kernel.settings import Settings
from kernel.tokens import BuiltinIssuer
from wms import pilot_records, task_queues
from wms.batch.backends import backend_for
from wms.batch.interface import FINAL, LOST, RUNNING, WAITING, BatchBackend, BatchError, PilotSpec, QueueConfig

log = logging.getLogger("cairn.pilot_factory")

PILOT_SITE_CLAIM = "cairn_site"
PILOT_NAME_CLAIM = "cairn_pilot"
ROOT = Path(__file__).resolve().parent.parent


class FactorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_PILOT_FACTORY_", extra="ignore")

    # The API the pilots talk to (default: this installation's API URL).
    api_url: str = ""
    # Where pilot scripts, logs and work directories go (default: VAR_DIR/pilots).
    work_dir: Path | None = None
    per_cycle: int = Field(10, ge=1, le=1000)
    poll_s: float = Field(5.0, gt=0)
    lease_s: float = Field(60.0, ge=1)
    # A pilot stops after this long without a matching job.
    pilot_idle_s: float = Field(60.0, gt=0)
    pilot_token_s: int = Field(6 * 3600, ge=60)
    pilot_time_limit_s: int = Field(24 * 3600, ge=60)
    # A pilot the batch system forgot is lost after this long; an unconfirmed submission fails after this long.
    lost_after_s: float = Field(60.0, gt=0)
    pilot_vo: str = "pilots"


def queue_config(queue: SiteQueue) -> QueueConfig:
    return QueueConfig(name=queue.name, site=queue.site, backend=queue.backend, partition=queue.partition,
                       cores=queue.cores, memory_mb=queue.memory_mb, max_waiting=queue.max_waiting,
                       max_running=queue.max_running, tags=tuple(queue.tags))


class PilotFactory(Daemon):
    name = "pilot-factory"

    def __init__(self, db: AsyncDatabase[Document], settings: Settings, config: FactorySettings,
                 issuer: BuiltinIssuer) -> None:
        super().__init__()
        self.db = db
        self.config = config
        self.issuer = issuer
        self.api_url = config.api_url or settings.resolved_api_url
        self.work_dir = (config.work_dir or settings.var_dir / "pilots").resolve()
        self.idle_sleep_s = config.poll_s
        self._backends: dict[str, BatchBackend] = {}

    def backend(self, kind: str) -> BatchBackend:
        if kind not in self._backends:
            self._backends[kind] = backend_for(kind, self.work_dir)
        return self._backends[kind]

    async def run_once(self) -> int:
        handled = 0
        for queue in await list_queues(self.db):
            if not queue.enabled or self.stopping:
                continue
            name = f"pilot-factory:{queue.site}:{queue.name}"
            if not await lease.acquire(self.db, name, self.worker, lease_s=self.config.lease_s):
                continue

            async def keep(lease_name: str = name) -> bool:
                return await lease.acquire(self.db, lease_name, self.worker, lease_s=self.config.lease_s)

            held, result = await self._isolated(queue, lease.while_held(self.cycle(queue_config(queue)), keep,
                                                                        every_s=self.config.lease_s / 3))
            if held and result:
                handled += result
        return handled

    async def _isolated(self, queue: SiteQueue, work: Awaitable[tuple[bool, int | None]]) -> tuple[bool, int | None]:
        """One queue's pass. Its batch system down (or its own unexpected error) is logged and the
        other queues go on: one site's Slurm controller down stopped every site's pilots. The
        database down is no one queue's fault: it stops the pass, and the daemon backs off."""
        try:
            return await work
        except BatchError as exc:
            log.warning("queue %s:%s: its batch system failed (%s); the other queues go on",
                        queue.site, queue.name, exc)
        except Exception as exc:
            if retried(exc):
                raise
            log.exception("queue %s:%s failed; the other queues go on", queue.site, queue.name)
        return False, None

    async def cycle(self, queue: QueueConfig) -> int:
        """Reconcile, follow and submit for one queue; how many pilots were submitted."""
        backend = self.backend(queue.backend)
        pilots = await pilot_records.active(self.db, queue.site, queue.name)
        await self._reconcile(backend, [p for p in pilots if p["state"] == pilot_records.SUBMITTING])
        await self._follow(backend, [p for p in pilots if p.get("batch_id")])
        pilots = await pilot_records.active(self.db, queue.site, queue.name)
        waiting = sum(p["state"] in (pilot_records.SUBMITTING, WAITING) for p in pilots)
        running = sum(p["state"] == RUNNING for p in pilots)
        # A pilot that runs but has taken no job yet is about to take one of the waiting jobs.
        starting = sum(p["state"] == RUNNING and not p.get("jobs") for p in pilots)
        demand = await self.demand(queue)
        count = min(demand - waiting - starting, queue.max_waiting - waiting, queue.max_running - running - waiting,
                    self.config.per_cycle)
        if count <= 0:
            return 0
        return await self.submit(backend, queue, count)

    async def demand(self, queue: QueueConfig) -> int:
        """How many waiting jobs this queue's pilots could run (from the task queues)."""
        eligible = await task_queues.eligible_queues(self.db, queue.site, queue.cores, queue.memory_mb,
                                                     list(queue.tags))
        return sum(int(q.get("waiting", 0)) for q in eligible)

    async def submit(self, backend: BatchBackend, queue: QueueConfig, count: int) -> int:
        specs = [self.pilot_spec(queue, f"{queue.site}.{queue.name}.{uuid.uuid4().hex[:10]}") for _ in range(count)]
        await pilot_records.record_intents(self.db, [
            {"_id": s.name, "site": queue.site, "queue": queue.name, "backend": queue.backend,
             "log": str(s.log_path), "factory": self.worker} for s in specs])
        try:
            ids = await backend.submit(queue, specs)
        except BatchError as exc:
            log.warning("queue %s:%s: submission failed: %s", queue.site, queue.name, exc)
            for s in specs:
                await pilot_records.set_state(self.db, s.name, "failed", reason=f"submission failed: {exc}")
            return 0
        submitted = 0
        for spec, batch_id in zip(specs, ids, strict=False):
            if batch_id:
                await pilot_records.set_submitted(self.db, spec.name, batch_id)
                submitted += 1
            else:
                await pilot_records.set_state(self.db, spec.name, "failed", reason="the batch system refused it")
        log.info("queue %s:%s: submitted %d pilots", queue.site, queue.name, submitted)
        return submitted

    def pilot_spec(self, queue: QueueConfig, name: str) -> PilotSpec:
        """What to submit for one pilot: its script, its own token (jobs.pilot, bound to the queue's
        site and to `name`), the environment it needs, and where its log goes."""
        token = self.issuer.issue(
            sub=f"pilot:{name}", vo=self.config.pilot_vo, scopes=("jobs.pilot",),
            lifetime_s=self.config.pilot_token_s,
            extra={PILOT_SITE_CLAIM: queue.site, PILOT_NAME_CLAIM: name})
        work = self.work_dir / "work" / name
        argv = [sys.executable, "-m", "cairn", "pilot", "--site", queue.site, "--work-dir", str(work),
                "--cpu", str(queue.cores), "--memory-mb", str(queue.memory_mb),
                "--idle-exit-s", str(self.config.pilot_idle_s)]
        for tag in queue.tags:
            argv += ["--tag", tag]
        env = {"CAIRN_API_URL": self.api_url, "CAIRN_TOKEN": token, "CAIRN_PILOT_NAME": name,
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        for key in ("CAIRN_STORAGE_CREDENTIALS", "CAIRN_WMS_HEARTBEAT_S"):
            if key in os.environ:
                env[key] = os.environ[key]
        return PilotSpec(name=name, script=f"cd {shlex.quote(str(ROOT))} && exec {shlex.join(argv)}\n", env=env,
                         log_path=self.work_dir / "logs" / f"{name}.log", cores=queue.cores,
                         memory_mb=queue.memory_mb, time_limit_s=self.config.pilot_time_limit_s)

    async def _reconcile(self, backend: BatchBackend, pending: list[Document]) -> None:
        if not pending:
            return
        found = await backend.find([p["_id"] for p in pending])
        cutoff = pilot_records.now() - dt.timedelta(seconds=self.config.lost_after_s)
        for p in pending:
            if p["_id"] in found:
                log.info("pilot %s: adopted batch job %s after an unconfirmed submission", p["_id"], found[p["_id"]])
                await pilot_records.set_submitted(self.db, p["_id"], found[p["_id"]])
            elif _aware(p["submitted_at"]) < cutoff:
                await pilot_records.set_state(self.db, p["_id"], "failed",
                                              reason="submission not confirmed by the batch system")

    async def _follow(self, backend: BatchBackend, pilots: list[Document]) -> None:
        if not pilots:
            return
        for p in pilots:
            backend.follow(p["batch_id"], Path(p["log"]))
        statuses = await backend.status([p["batch_id"] for p in pilots])
        at = pilot_records.now()
        for p in pilots:
            st = statuses[p["batch_id"]]
            if st.state == LOST:
                since = p.get("unknown_since")
                if since is None:
                    await pilot_records.mark_unknown(self.db, p["_id"], at)
                elif (at - _aware(since)).total_seconds() > self.config.lost_after_s:
                    await pilot_records.set_state(self.db, p["_id"], LOST, reason=st.reason)
                continue
            if st.state in FINAL:
                await pilot_records.set_state(self.db, p["_id"], st.state, exit_code=st.exit_code,
                                              reason=st.reason, extra={"finished_at": at})
            elif st.state != p["state"] or p.get("unknown_since"):
                await pilot_records.set_state(self.db, p["_id"], st.state, extra={"unknown_since": None})


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
