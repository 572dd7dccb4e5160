"""`cairn daemon transfers`: the transfer worker.

Each cycle it collects finished copies, claims queued transfers in batches (up to its global
limit plus a prefetch), plans them (source by rank, staging when the only sources are on tape)
and registers the destination replicas of the whole batch `copying` at once; then it starts
the waiting copies per link (source SE → destination SE) as far as the optimizer's decision
for the link and the global and per-SE limits allow — in memory, so a slot freed by a finished
copy is refilled at once. Leases are renewed in one write per renewal (its own task), and the
copies whose lease was lost are stopped (cancelled, or taken over after this worker stalled);
the holds on their destination replicas (`catalogue.upload_leases`) are renewed with them.
What one transfer does is in `transfers.transfer`; the catalogue and queue steps before and
after the copies are taken in bulk (`transfers.copy_steps`): whatever ended — copied, failed,
found at its destination already, parked for staging — is gathered in a `Cycle` and settled
together once per `settle_every_s` (or at once when nothing else runs), so the database sees a
few writes per batch, not per file; a settling that fails (the database down) is kept, its
leases renewed, and tried again at the next. Any number of workers share the queue: a request is held
by one lease at a time, and the replica steps are idempotent. A request whose end is being
written is not stopped when its lease is found gone: ending it is what gives the lease up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import (
    dataset_recount,
    directory_move_repair,
    move_counts,
    overwrite_counts,
    registration_counts,
    removal_counts,
    usage_intents,
)
from catalogue.files import fetch_files
from catalogue.storage_elements import StorageElement, list_storage_elements
from catalogue.upload_leases import hold_for_transfers
from catalogue.writer_tokens import TRANSFER_LEASE_S
from kernel.daemon import Daemon, retried
from kernel.db import COMMANDS, Document
from kernel.lease import SURE_PART, LeaseKeeper
from kernel.settings import Settings
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.copy_steps import Cycle, finish_cycle, start_copies
from transfers.failures import classify
from transfers.optimizer import Optimizer
from transfers.transfer import Context, Copied, Failed, Job, abandon, plan, run_copy, stage, sweep_ended

log = logging.getLogger("cairn.transfers")

SE_REFRESH_S = 10.0
SWEEP_EVERY_S = 30.0
# A settling failing for another reason than a dependency down is tried this many times, then
# dropped (its requests' leases run out and they are taken again).
MAX_SETTLE_TRIES = 5

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
        self._settled_at = time.monotonic()
        self._steps: asyncio.Task[int] | None = None  # the database steps in flight, if any
        self._settle_failures = 0  # settlings failed in a row (`_unsettled`)
        self.on_link: dict[str, float] = {}
        self._commands_reported = COMMANDS.sent
        self._ses: dict[str, StorageElement] = {}
        self._ses_at = 0.0
        # Its own task: a slow database round trip in the loop below must not cost a lease.
        self.keeper = LeaseKeeper(self._renew, self._renewable, self._lost, every_s=t.lease_s / 4)
        self._swept_at = 0.0
        # A claim that found fewer requests than it asked for drained the queue: the next waits
        # idle_sleep_s (each claim costs a few round trips; claiming on every turn of the loop
        # while copies ran made them most of the database's work when claims scanned the queue).
        self._claim_after = 0.0
        self._expired_look_at = 0.0  # when to look for requests whose lease ran out next (monotonic)
        self._holds_due = time.monotonic() + TRANSFER_LEASE_S / 4  # when to renew the destination replicas' holds

    @property
    def held(self) -> list[str]:
        return [*self.running, *self.stepping, *(job.id for job in self.cycle.jobs()),
                *(job.id for queue in self.waiting.values() for job in queue)]

    async def run_once(self) -> int:
        """Collect and start copies in memory; the database steps (settling, claiming, sweeping)
        run beside them in one task at a time, so a slow round trip never leaves slots idle."""
        self.keeper.ensure_running()
        handled = self._collect()
        if self._steps is not None and self._steps.done():
            steps, self._steps = self._steps, None
            handled += steps.result()  # its errors are the loop's (backoff when unavailable)
        self._dispatch()
        if self._steps is None and (not self.running or self._settle_in() <= 0 or self._claim_room()
                                    or self._sweep_due()):
            self._steps = asyncio.create_task(self._take_steps())
        if not self.running:  # nothing copies: the steps are all there is to wait for
            pending, self._steps = self._steps, None
            if pending is not None:
                handled += await pending
            self._dispatch()
            return handled
        waits = [task for _, task, _ in self.running.values()]
        await asyncio.wait([*waits, self._steps] if self._steps else waits,
                           timeout=min(0.5, max(0.05, self._settle_in())), return_when=asyncio.FIRST_COMPLETED)
        return max(handled, 1)

    def _settle_in(self) -> float:
        """Seconds until the next settling is due."""
        return self._settled_at + self.ctx.settings.settle_every_s - time.monotonic()

    async def _take_steps(self) -> int:
        """Settle what ended (when due), claim more (when there is room), sweep (when due);
        returns the requests claimed."""
        if not self.running or self._settle_in() <= 0:
            await self._settle()
        claimed = await self._claim()
        await self._sweep_if_due()
        return claimed

    async def ses(self) -> dict[str, StorageElement]:
        if time.monotonic() - self._ses_at > SE_REFRESH_S:
            self._ses = {se.name: se for se in await list_storage_elements(self.ctx.db)}
            self._ses_at = time.monotonic()
        return self._ses

    def _collect(self) -> int:
        """Take the finished copies out of `running` into the cycle (their link slots free at
        once); they are settled with whatever else ended at the cycle's next settling."""
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
                self._finished(job, ok=True)
            else:
                self.cycle.failures.append(outcome)
                self._finished(job, ok=False)
        return len(finished)

    async def _settle(self) -> None:
        self._settled_at = time.monotonic()
        if not self.cycle:
            return
        cycle, self.cycle = self.cycle, Cycle()
        unsettled = cycle.copy()
        for job in cycle.jobs():
            self.stepping[job.id] = job
        try:
            sent, self._commands_reported = COMMANDS.sent - self._commands_reported, COMMANDS.sent
            ended = await finish_cycle(self.ctx, cycle, db_commands=sent)
        except Exception as exc:
            self._unsettled(unsettled, exc)
            raise
        except BaseException:
            self._drop(cycle)
            raise
        finally:
            for job in cycle.jobs():
                self.stepping.pop(job.id, None)
        self._settle_failures = 0
        for job, ok in ended:
            self._finished(job, ok=ok)

    def _unsettled(self, cycle: Cycle, exc: Exception) -> None:
        """A settling that failed is kept, its leases renewed, and tried again at the next one
        (after the loop's backoff): dropped, its copies were made again once their leases ran out.
        Its steps are idempotent and guarded (`copy_steps`), so a retry after a partial one counts
        nothing twice. The database down is waited out (what is kept is bounded by the claims, which
        count it as held); another error drops the batch after MAX_SETTLE_TRIES, as before."""
        self._settle_failures += 1
        if retried(exc) or self._settle_failures < MAX_SETTLE_TRIES:
            self.cycle.merge(cycle)
        else:
            log.error("settling %d request(s) failed %d times; leaving them to their leases",
                      sum(1 for _ in cycle.jobs()), self._settle_failures)
            self._drop(cycle)

    def _drop(self, cycle: Cycle) -> None:
        for job in cycle.jobs():
            if self.on_link.pop(job.id, None) is not None:
                self.optimizer.released(*job.link)

    def _finished(self, job: Job, *, ok: bool) -> None:
        """Tell the optimizer, if the job counted on its link (it was started there)."""
        started = self.on_link.pop(job.id, None)
        if started is not None:
            self.optimizer.finished(*job.link, ok=ok, nbytes=int((job.file or {}).get("size", 0)) if ok else 0,
                                    seconds=time.monotonic() - started, queued=len(self.waiting.get(job.link, ())))

    def _renewable(self) -> list[str]:
        # Finished copies not collected yet ended their requests themselves, or are about to.
        return [rid for rid in self.held if rid not in self.running or not self.running[rid][1].done()]

    def _jobs(self) -> dict[str, Job]:
        """The jobs this worker holds the requests of, by request id."""
        running = (job for job, _, _ in self.running.values())
        waiting = (job for queue in self.waiting.values() for job in queue)
        return {job.id: job for job in (*running, *self.stepping.values(), *self.cycle.jobs(), *waiting)}

    async def _renew(self, held: Sequence[str]) -> set[str]:
        sent = time.monotonic()
        kept = await rc.renew_leases(self.ctx.db, held, self.worker, lease_s=self.ctx.settings.lease_s)
        jobs = self._jobs()
        for rid in kept:
            if rid in jobs:
                jobs[rid].held_until = sent + SURE_PART * self.ctx.settings.lease_s
        if time.monotonic() >= self._holds_due:  # the destination replicas' holds, with their requests
            self._holds_due = time.monotonic() + TRANSFER_LEASE_S / 4
            copying = [job for job in (*(job for job, _, _ in self.running.values()),
                                       *(job for queue in self.waiting.values() for job in queue))
                       if job.id in kept and job.dest is not None]
            lost = await hold_for_transfers(self.ctx.db, [(job.lfn, job.dest.name) for job in copying if job.dest])
            for lfn, se in lost:
                log.warning("%s: the hold on its replica on %s was lost (%s)", lfn, se, lost[(lfn, se)])
        return kept

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

    def _claim_room(self) -> int:
        """How many requests to claim now (0: none). While copies still wait here, only once a
        batch has room: each claim costs a few round trips, whatever its size."""
        settings = self.ctx.settings
        capacity = settings.global_limit + settings.prefetch
        room = min(settings.claim_batch, capacity - len(self.held))
        half_batch = min(settings.claim_batch, capacity) // 2
        if self.stopping or room <= 0 or (room < half_batch and any(self.waiting.values())):
            return 0
        if self.running and time.monotonic() < self._claim_after:
            return 0
        return room

    async def _claim(self) -> int:
        settings = self.ctx.settings
        room = self._claim_room()
        if not room:
            return 0
        # Requests whose worker died are looked for once per renewal period (lease_s / 4), not at
        # every claim (several a second while small files flow): they have waited a lease already.
        expired = time.monotonic() >= self._expired_look_at
        if expired:
            self._expired_look_at = time.monotonic() + settings.lease_s / 4
        sent = time.monotonic()
        claimed = await rc.claim_many(self.ctx.db, self.worker, kinds=["transfer"], lease_s=settings.lease_s,
                                      limit=room, expired=expired)
        drained = len(claimed) < room
        self._claim_after = time.monotonic() + settings.idle_sleep_s if drained else 0.0
        files = await fetch_files(self.ctx.db, {request["lfn"] for request in claimed}) if claimed else {}
        ses = await self.ses()
        copies: list[Job] = []
        held_until = sent + SURE_PART * settings.lease_s
        for request in claimed:
            try:
                job = await plan(self.ctx, request, files.get(request["lfn"]), ses)
                job.held_until = held_until
                if job.outcome == "copy":
                    copies.append(job)
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
                job = Job(request, "failed", failure=failure, held_until=held_until)
                self.cycle.failures.append(Failed(job, failure, attempted=False))
        await self._register(copies)
        return len(claimed)

    async def _register(self, jobs: list[Job]) -> None:
        """Register the destination replicas of a claimed batch `copying` in one go; the copies
        then wait for a slot on their link. Those that ended here go to the cycle."""
        if not jobs:
            return
        for job in jobs:
            self.stepping[job.id] = job
        ended = Cycle()
        try:
            ready = await start_copies(self.ctx, jobs, ended)
        finally:
            for job in jobs:
                self.stepping.pop(job.id, None)
        self.cycle.failures += ended.failures
        self.cycle.already_there += ended.already_there
        for job in ready:
            self.waiting.setdefault(job.link, deque()).append(job)

    def _dispatch(self) -> None:
        """Start what the optimizer allows (the replicas are registered already)."""
        at = time.monotonic()
        for link, queue in self.waiting.items():
            while queue and self.optimizer.may_start(*link):
                job = queue.popleft()
                self.optimizer.started(*link)
                self.on_link[job.id] = at
                self.running[job.id] = (job, asyncio.create_task(self._run(job)), at)

    async def _run(self, job: Job) -> Copied | Failed:
        try:
            return await run_copy(self.ctx, job)
        except asyncio.CancelledError:
            await asyncio.shield(abandon(self.ctx, job.id, job.lfn, job.dest, stopping=self.stopping,
                                        held_until=job.held_until))
            raise

    def _sweep_due(self) -> bool:
        return time.monotonic() - self._swept_at >= SWEEP_EVERY_S

    async def _sweep_if_due(self) -> None:
        if not self._sweep_due():
            return
        self._swept_at = time.monotonic()
        stale_s = self.ctx.settings.usage_settle_after_s
        if settled := await usage_intents.settle_stale(self.ctx.db, stale_s):  # counts a killed process left
            log.info("settled %d replica count(s) a stopped process had left noted", settled)
        if settled := await registration_counts.settle_stale(self.ctx.db, stale_s):
            log.info("settled %d registration count(s) a stopped process had left pending", settled)
        if settled := await overwrite_counts.settle_stale(self.ctx.db, stale_s):
            log.info("settled %d overwrite count(s) a stopped process had left pending", settled)
        if settled := await removal_counts.settle_stale(self.ctx.db, stale_s):
            log.info("settled %d file removal count(s) a stopped process had left pending", settled)
        if settled := await move_counts.settle_stale(self.ctx.db, stale_s):
            log.info("finished or took back %d file move(s) a stopped process had left half done", settled)
        lease = dt.timedelta(seconds=self.ctx.settings.directory_move_lease_s)
        if settled := await directory_move_repair.settle_stale(self.ctx.db, stale_s, lease):
            log.info("finished or took back %d directory move(s) a stopped process had left", settled)
        if settled := await dataset_recount.settle_stale(self.ctx.db, stale_s):
            log.info("recounted the DIDs of %d attach, detach or refresh call(s) a stopped process had left",
                     settled)
        cleaned = await sweep_ended(self.ctx, await self.ses())
        if cleaned:
            log.info("removed the copying replicas of %d ended request(s)", cleaned)

    async def close(self) -> None:
        """Stop running copies (their replicas are removed) and give back everything held."""
        await self.keeper.stop()
        if self._steps is not None:
            with contextlib.suppress(Exception):
                await self._steps
        self._collect()  # copies that ended already are settled below, not redone
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
