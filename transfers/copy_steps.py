"""The catalogue and queue steps around one worker cycle's copies, taken in bulk.

Before: the destination replicas of the copies a cycle starts are registered `copying` in one
guarded bulk push, and their requests flagged as owning them in one update. After: the verified
copies that ended during the cycle flip `copying` → `available` in one guarded update, count on
their links in one upsert each, and end their requests `done` in one bulk write, each guarded by
its lease and counting its copy in the same write. Every step is idempotent and guarded as its
one-file form is (`transfers.destination`, `transfers.requests.complete`), so a worker killed
between two of them leaves what the worker taking over finishes without counting anything twice:
a replica found `available` with the request's `copying_replica` flag still set is counted once
by whoever clears the flag (`transfer.count_earlier_copy`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kernel.errors import CairnError, ServiceUnavailable
from kernel.principal import DEFAULT_VO
from transfers import destination, link_stats
from transfers import requests as rq
from transfers.endpoints import endpoints
from transfers.failures import Failure, classify
from transfers.transfer import Context, Copied, Job, count_earlier_copy, failed, release_pin

log = logging.getLogger("cairn.transfers")


async def start_copies(ctx: Context, jobs: Sequence[Job]) -> tuple[list[Job], list[tuple[Job, bool]]]:
    """Register the destination replicas of the copies about to start. Returns the jobs to copy,
    and the ones that ended here (True: the file was there already; False: failed)."""
    ready: list[Job] = []
    ended: list[tuple[Job, bool]] = []
    wanted: list[Job] = []
    for job in jobs:
        assert job.dest is not None and job.file is not None
        try:  # before anything is registered: an SE switched off for writing fails here
            job.dest_eps = endpoints(job.dest, job.lfn, "write", credentials=ctx.credentials)
        except CairnError as exc:
            await failed(ctx, job, classify(exc))
            ended.append((job, False))
            continue
        wanted.append(job)
    try:
        statuses = await destination.register_copying_many(
            ctx.db, [(job.file, job.dest) for job in wanted if job.file is not None and job.dest is not None])
    except ServiceUnavailable:
        raise
    except CairnError:  # one file's replica would not register: find which, and fail only that one
        statuses = {}
        for job in list(wanted):
            assert job.dest is not None
            try:
                statuses[(job.lfn, job.dest.name)] = await destination.register_copying(ctx.db, job.lfn, job.dest)
            except ServiceUnavailable:
                raise
            except CairnError as exc:
                await failed(ctx, job, classify(exc))
                ended.append((job, False))
                wanted.remove(job)
    for job in wanted:
        assert job.dest is not None
        if statuses[(job.lfn, job.dest.name)] == "available":
            job.ending = True
            await count_earlier_copy(ctx, job)
            if await rq.complete(ctx.db, job.id, ctx.worker, {"already_there": True}):
                await release_pin(ctx, job)
            ended.append((job, True))
        else:
            ready.append(job)
    await rq.flag_copying_replicas(ctx.db, [job.id for job in ready])
    return ready, ended


async def _confirm(ctx: Context, copies: Sequence[Copied]) -> set[tuple[str, str]]:
    """The `(lfn, se)` of the copies whose replica is `available` now (one LFN per bulk round)."""
    confirmed: set[tuple[str, str]] = set()
    pending = list(copies)
    while pending:
        batch: dict[str, Copied] = {}
        later: list[Copied] = []
        for copied in pending:
            if copied.job.lfn in batch:
                later.append(copied)
            else:
                batch[copied.job.lfn] = copied
        records = {}
        for lfn, copied in batch.items():
            assert copied.job.dest is not None and copied.job.file is not None
            se = copied.job.dest.name
            records[lfn] = (se, destination.copying_record(copied.job.file, se))
        confirmed |= {(lfn, records[lfn][0]) for lfn in await destination.confirm_many(ctx.db, records)}
        pending = later
    return confirmed


async def finish_copies(ctx: Context, copies: Sequence[Copied], *, db_commands: int = 0) -> list[tuple[Job, bool]]:
    """Take the steps after the verified copies of a cycle; returns each job with whether its
    copy stands (False: the replica changed during the copy, and the attempt failed)."""
    if not copies:
        return []
    confirmed = await _confirm(ctx, copies)
    good = [c for c in copies if c.job.dest is not None and (c.job.lfn, c.job.dest.name) in confirmed]
    changed = [c for c in copies if c not in good]
    for copied in good:
        copied.job.ending = True
    await link_stats.record_many(ctx.db, [
        link_stats.Outcome(c.job.link[0], c.job.link[1], True, c.result.bytes, c.result.seconds, c.result.mode,
                           activity=c.job.request.get("activity", "default"),
                           vo=c.job.request.get("vo") or DEFAULT_VO)
        for c in good], db_commands=db_commands)
    done = await rq.complete_many(ctx.db, {c.job.id: c.summary() for c in good}, ctx.worker, copied=True)
    for copied in good:
        if copied.job.id in done:
            await release_pin(ctx, copied.job)
        else:  # the lease was lost meanwhile; the copy still happened, so count it (once)
            await rq.count_unfinished_copy(ctx.db, copied.job.id)
    for copied in changed:
        job = copied.job
        assert job.dest is not None
        await rq.count_copy(ctx.db, job.id)
        await failed(ctx, job, Failure("replica_changed", f"{job.lfn}: the replica on {job.dest.name} changed "
                                                          "during the copy", False))
    return [(c.job, True) for c in good] + [(c.job, False) for c in changed]
