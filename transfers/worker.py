"""`cairn daemon transfers`: the transfer worker.

Each cycle it collects finished copies, renews the leases of everything it holds (and stops
the copies whose lease was lost: cancelled, or taken over after this worker stalled), claims
queued transfers up to its global limit plus a small prefetch, plans them (source by rank,
staging when the only sources are on tape), and starts the waiting ones per link (source SE →
destination SE) as far as the optimizer's decision for the link and the global and per-SE
limits allow. What one transfer does is in `transfers.transfer`; the catalogue and queue steps
before and after the copies of a cycle are taken in bulk (`transfers.copy_steps`): whatever
ended during a cycle — copied, failed, found at its destination already, parked for staging —
is gathered in a `Cycle` and settled together at the start of the next. Any number of
workers share the queue: a request is held by one lease at a time, and the replica steps are
idempotent. A request whose end is being written is not stopped when its lease is found gone:
ending it is what gives the lease up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.storage_elements import StorageElement, list_storage_elements
from kernel.daemon import Daemon
from kernel.db import COMMANDS, Document
from kernel.lease import LeaseKeeper
from kernel.settings import Settings
from transfers import requests as rq
from transfers.copy_steps import Cycle, finish_cycle, start_copies
from transfers.failures import classify
from transfers.optimizer import Optimizer
from transfers.transfer import Context, Copied, Failed, Job, abandon, plan, run_copy, stage, sweep_ended

log = logging.getLogger("cairn.transfers")

SE_REFRESH_S = 10.0
SWEEP_EVERY_S = 30.0
# Requests claimed per cycle (in one `claim_many`), so that starting copies and collecting
# results never wait for a long run of planning.
CLAIM_BURST = 32
# After the first copy of a cycle ends, how long the worker lets others end before it takes
# their steps together (one bulk write each, not one per file) — only while enough copies run
# for that to pay: on a link with a few slots the wait would cost throughput instead.
COLLECT_WINDOW_S = 0.1
COLLECT_WINDOW_MIN_RUNNING = 16

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
        self.running: dict[str, tuple[Job, asyncio.Task[Copied | Failed], float]] = {}
        # Jobs whose steps this cycle is taking (registering or ending them): held, not running.
        self.stepping: dict[str, Job] = {}
        # What ended since the last settling (held until then), and when the jobs the optimizer
        # counts on their link started.
        self.cycle = Cycle()
        self.on_link: dict[str, float] = {}
        self._commands_reported = COMMANDS.sent
        self._ses: dict[str, StorageElement] = {}
        self._ses_at = 0.0
        # Its own task: a slow database round trip in the loop below must not cost a lease.
        self.keeper = LeaseKeeper(self._renew, self._renewable, self._lost, every_s=t.lease_s / 4)
        self._swept_at = 0.0

    @property
    def held(self) -> list[str]:
        return [*self.running, *self.stepping, *(job.id for job in self.cycle.jobs()),
                *(job.id for queue in self.waiting.values() for job in queue)]

    async def run_once(self) -> int:
        self.keeper.ensure_running()
        handled = await self._collect()
        handled += await self._claim()
        await self._dispatch()
        await self._sweep_if_due()
        if self.running:
            tasks = [task for _, task, _ in self.running.values()]
            done, _ = await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            if done and len(done) < len(tasks) and len(tasks) >= COLLECT_WINDOW_MIN_RUNNING:
                await asyncio.sleep(COLLECT_WINDOW_S)
            return max(handled, 1)
        return handled

    async def ses(self) -> dict[str, StorageElement]:
        if time.monotonic() - self._ses_at > SE_REFRESH_S:
            self._ses = {se.name: se for se in await list_storage_elements(self.ctx.db)}
            self._ses_at = time.monotonic()
        return self._ses

    async def _collect(self) -> int:
        """Take the finished copies out of `running` and settle them with whatever else ended since
        the last cycle, in bulk; tell the optimizer."""
        finished = [rid for rid, (_, task, _) in self.running.items() if task.done()]
        for rid in finished:
            job, task, _ = self.running.pop(rid)
            if task.cancelled():  # its lease was lost, or the worker is stopping: not the link's doing
                self.optimizer.released(*job.link)
                self.on_link.pop(rid, None)
            elif task.exception() is not None:
                log.error("transfer %s (%s) crashed: %r", rid, job.lfn, task.exception())
                self._finished(job, ok=False)
            elif isinstance(outcome := task.result(), Copied):
                self.cycle.copies.append(outcome)
            else:
                self.cycle.failures.append(outcome)
        await self._settle()
        return len(finished)

    async def _settle(self) -> None:
        if not self.cycle:
            return
        cycle, self.cycle = self.cycle, Cycle()
        for job in cycle.jobs():
            self.stepping[job.id] = job
        try:
            sent, self._commands_reported = COMMANDS.sent - self._commands_reported, COMMANDS.sent
            ended = await finish_cycle(self.ctx, cycle, db_commands=sent)
        except BaseException:
            for job in cycle.jobs():
                if self.on_link.pop(job.id, None) is not None:
                    self.optimizer.released(*job.link)
            raise
        finally:
            for job in cycle.jobs():
                self.stepping.pop(job.id, None)
        for job, ok in ended:
            self._finished(job, ok=ok)

    def _finished(self, job: Job, *, ok: bool) -> None:
        """Tell the optimizer, if the job counted on its link (it was started there)."""
        started = self.on_link.pop(job.id, None)
        if started is not None:
            self.optimizer.finished(*job.link, ok=ok, nbytes=int((job.file or {}).get("size", 0)) if ok else 0,
                                    seconds=time.monotonic() - started, queued=len(self.waiting.get(job.link, ())))

    def _renewable(self) -> list[str]:
        # Finished copies not collected yet ended their requests themselves, or are about to.
        return [rid for rid in self.held if rid not in self.running or not self.running[rid][1].done()]

    async def _renew(self, held: Sequence[str]) -> set[str]:
        return await rq.renew_leases(self.ctx.db, held, self.worker, lease_s=self.ctx.settings.lease_s)

    def _lost(self, rid: str) -> None:
        """Stop the work of a request whose lease is gone, unless that work is ending it (then
        the lease went with the request's end: nothing to stop, nothing to count)."""
        if rid in self.running and not self.running[rid][0].ending and not self.running[rid][1].done():
            log.warning("lost the lease of request %s; stopping its copy", rid)
            self.running[rid][1].cancel()
        for queue in self.waiting.values():
            for job in [j for j in queue if j.id == rid]:
                log.warning("lost the lease of request %s; dropping it", rid)
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
        files = await fetch_files(self.ctx.db, {request["lfn"] for request in claimed}) if claimed else {}
        ses = await self.ses()
        for request in claimed:
            handled += 1
            try:
                job = await plan(self.ctx, request, files.get(request["lfn"]), ses)
                if job.outcome == "copy":
                    self.waiting.setdefault(job.link, deque()).append(job)
                elif job.outcome == "stage":
                    self.cycle.parked.append((job, await stage(self.ctx, job)))
                elif job.outcome == "done":
                    self.cycle.already_there.append(job)
                elif job.failure is not None:
                    self.cycle.failures.append(Failed(job, job.failure, attempted=False))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify(exc)
                log.warning("request %s (%s): %s", request["_id"], request["lfn"], failure.message)
                self.cycle.failures.append(Failed(Job(request, "failed", failure=failure), failure, attempted=False))
        return handled

    async def _dispatch(self) -> None:
        """Start what the optimizer allows, registering the destination replicas in one go."""
        starting: list[Job] = []
        for link, queue in self.waiting.items():
            while queue and self.optimizer.may_start(*link):
                job = queue.popleft()
                self.optimizer.started(*link)
                starting.append(job)
                self.stepping[job.id] = job
        if not starting:
            return
        ended = Cycle()
        try:
            ready = await start_copies(self.ctx, starting, ended)
        except BaseException:
            for job in starting:  # back to waiting, as they were (their leases still renewed)
                self.optimizer.released(*job.link)
                self.waiting[job.link].appendleft(job)
            raise
        finally:
            for job in starting:
                self.stepping.pop(job.id, None)
        at = time.monotonic()
        for job in starting:
            self.on_link[job.id] = at
        self.cycle.failures += ended.failures
        self.cycle.already_there += ended.already_there
        for job in ready:
            self.running[job.id] = (job, asyncio.create_task(self._run(job)), at)

    async def _run(self, job: Job) -> Copied | Failed:
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
        with contextlib.suppress(Exception):  # what ended before the stop is settled, not redone
            await self._settle()
        for queue in self.waiting.values():
            for job in queue:
                with contextlib.suppress(Exception):
                    await rq.release(self.ctx.db, job.id, self.worker)
        self.waiting.clear()
