"""`cairn daemon transfers`: the transfer worker.

Each cycle it collects finished copies, renews the leases of everything it holds (and stops
the copies whose lease was lost: cancelled, or taken over after this worker stalled), claims
queued transfers up to its global limit plus a small prefetch, plans them (source by rank,
staging when the only sources are on tape), and starts the waiting ones per link (source SE →
destination SE) as far as the optimizer's decision for the link and the global and per-SE
limits allow. What one transfer does is in `transfers.transfer`. Any number of workers share
the queue: a request is held by one lease at a time, and the replica steps are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import StorageElement, list_storage_elements
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.lease import LeaseKeeper
from kernel.settings import Settings
from transfers import requests as rq
from transfers.failures import classify
from transfers.optimizer import Optimizer
from transfers.transfer import Context, Job, abandon, finish_without_copy, plan, run_copy, stage, sweep_ended

log = logging.getLogger("cairn.transfers")

SE_REFRESH_S = 10.0
SWEEP_EVERY_S = 30.0
# Requests claimed per cycle (in one `claim_many`), so that starting copies and collecting
# results never wait for a long run of planning.
CLAIM_BURST = 8

Link = tuple[str, str]


class TransferWorker(Daemon):
    name = "transfers"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        t = settings.transfers
        self.ctx = Context(db, self.worker, t, settings.storage_credentials, settings.audit.suspicious_threshold)
        self.idle_sleep_s = t.idle_sleep_s
        self.optimizer = Optimizer(min_active=t.link_min_active, max_active=t.link_max_active,
                                   global_limit=t.global_limit, per_se_limit=t.per_se_limit)
        self.waiting: dict[Link, deque[Job]] = {}
        self.running: dict[str, tuple[Job, asyncio.Task[bool], float]] = {}
        self._ses: dict[str, StorageElement] = {}
        self._ses_at = 0.0
        # Its own task: a slow database round trip in the loop below must not cost a lease.
        self.keeper = LeaseKeeper(self._renew, self._renewable, self._lost, every_s=t.lease_s / 4)
        self._swept_at = 0.0

    @property
    def held(self) -> list[str]:
        return [*self.running, *(job.id for queue in self.waiting.values() for job in queue)]

    async def run_once(self) -> int:
        self.keeper.ensure_running()
        handled = self._collect()
        handled += await self._claim()
        self._dispatch()
        await self._sweep_if_due()
        if self.running:
            tasks = [task for _, task, _ in self.running.values()]
            await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            return max(handled, 1)
        return handled

    async def ses(self) -> dict[str, StorageElement]:
        if time.monotonic() - self._ses_at > SE_REFRESH_S:
            self._ses = {se.name: se for se in await list_storage_elements(self.ctx.db)}
            self._ses_at = time.monotonic()
        return self._ses

    def _collect(self) -> int:
        finished = [rid for rid, (_, task, _) in self.running.items() if task.done()]
        for rid in finished:
            job, task, started = self.running.pop(rid)
            ok = not task.cancelled() and task.exception() is None and task.result()
            if not task.cancelled() and task.exception() is not None:
                log.error("transfer %s (%s) crashed: %r", rid, job.lfn, task.exception())
            source, dest = job.link
            self.optimizer.finished(source, dest, ok=ok, nbytes=int((job.file or {}).get("size", 0)) if ok else 0,
                                    seconds=time.monotonic() - started,
                                    queued=len(self.waiting.get(job.link, ())))
        return len(finished)

    def _renewable(self) -> list[str]:
        # Finished copies not collected yet ended their requests themselves: not theirs to renew.
        return [rid for rid in self.held if rid not in self.running or not self.running[rid][1].done()]

    async def _renew(self, held: Sequence[str]) -> set[str]:
        return await rq.renew_leases(self.ctx.db, held, self.worker, lease_s=self.ctx.settings.lease_s)

    def _lost(self, rid: str) -> None:
        log.warning("lost the lease of request %s; stopping its work", rid)
        if rid in self.running:
            self.running[rid][1].cancel()
        for queue in self.waiting.values():
            for job in [j for j in queue if j.id == rid]:
                queue.remove(job)

    async def _claim(self) -> int:
        handled = 0
        room = min(CLAIM_BURST, self.ctx.settings.global_limit + self.ctx.settings.prefetch - len(self.held))
        # While copies still wait here, claim only once a batch has room: one claim per finished
        # copy would cost a locked scan of the queue on FerretDB each time.
        if self.stopping or room <= 0 or (room < CLAIM_BURST // 2 and any(self.waiting.values())):
            return 0
        claimed = await rq.claim_many(self.ctx.db, self.worker, kinds=["transfer"], lease_s=self.ctx.settings.lease_s,
                                      limit=room)
        for request in claimed:
            handled += 1
            try:
                job = await plan(self.ctx, request, await self.ses())
                if job.outcome == "copy":
                    self.waiting.setdefault(job.link, deque()).append(job)
                elif job.outcome == "stage":
                    await stage(self.ctx, job)
                else:
                    await finish_without_copy(self.ctx, job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify(exc)
                log.warning("request %s (%s): %s", request["_id"], request["lfn"], failure.message)
                await rq.fail_or_retry(self.ctx.db, request, self.worker, failure,
                                       base_s=self.ctx.settings.retry_base_s, cap_s=self.ctx.settings.retry_cap_s)
        return handled

    def _dispatch(self) -> None:
        for link, queue in self.waiting.items():
            while queue and self.optimizer.may_start(*link):
                job = queue.popleft()
                self.optimizer.started(*link)
                self.running[job.id] = (job, asyncio.create_task(self._run(job)), time.monotonic())

    async def _run(self, job: Job) -> bool:
        try:
            return await run_copy(self.ctx, job)
        except asyncio.CancelledError:
            await asyncio.shield(abandon(self.ctx, job.id, job.lfn, job.dest, stopping=self.stopping))
            raise

    async def _sweep_if_due(self) -> None:
        if time.monotonic() - self._swept_at < SWEEP_EVERY_S:
            return
        self._swept_at = time.monotonic()
        cleaned = await sweep_ended(self.ctx, await self.ses())
        if cleaned:
            log.info("removed the copying replicas of %d ended request(s)", cleaned)

    async def close(self) -> None:
        """Stop running copies (their replicas are removed) and give back everything held."""
        await self.keeper.stop()
        for _, task, _ in self.running.values():
            task.cancel()
        for _, task, _ in list(self.running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.running.clear()
        for queue in self.waiting.values():
            for job in queue:
                with contextlib.suppress(Exception):
                    await rq.release(self.ctx.db, job.id, self.worker)
        self.waiting.clear()
