"""The catalogue and queue steps around one worker cycle's copies, taken in bulk.

Before: the destination replicas of the copies a cycle starts are registered `copying` in one
guarded bulk push, and their requests flagged as owning them in one update. After: whatever
ended during the cycle (`Cycle`: verified copies, failed attempts, files found at their
destination already, requests parked for staging) is settled together — the verified copies'
replicas flip `copying` → `available` in one guarded update, the failed ones' replicas go in one
bulk pull (`transfers.failed_copies`), every request ends in one bulk write, each guarded by its
lease and attempt (`requests.end_many`) and counting its copy in the same write, and the links
count the cycle in one upsert each. Every step is idempotent and guarded as its one-file form
is, so a worker killed between two of them leaves what the worker taking over finishes without
counting anything twice: a replica found `available` with the request's `copying_replica` flag
still set is counted once by whoever clears the flag (`transfer.count_earlier_copy`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from catalogue.replica_removal import ReplicaBeingRemoved
from catalogue.storage_paths import storage_lfn
from catalogue.upload_leases import hold_for_transfers
from kernel.errors import CairnError, ServiceUnavailable
from transfers import destination, failed_copies, link_stats, recalls
from transfers import requests as rq
from transfers.endpoints import endpoints
from transfers.failures import DESTINATION_IN_PROGRESS, Failure, classify
from transfers.transfer import Context, Copied, Failed, Job, count_earlier_copy, release_pin, release_recall

log = logging.getLogger("cairn.transfers")


@dataclass
class Cycle:
    """What ended during a worker cycle, its steps still to take (`finish_cycle`)."""

    copies: list[Copied] = field(default_factory=list)
    failures: list[Failed] = field(default_factory=list)
    already_there: list[Job] = field(default_factory=list)  # nothing to copy: the file is there
    parked: list[tuple[Job, dict[str, Any]]] = field(default_factory=list)  # waiting for staging
    # Its ends' tokens (`requests.end_many`): kept across the tries of a settling that failed.
    tokens: list[str] = field(default_factory=lambda: [uuid.uuid4().hex])
    # The requests whose outcomes are on their links' counters and hourly series, and the counts
    # sent whose writes may have landed (their replies lost): shared by a settling's copy
    # (`copy`), which the worker keeps to try again if it fails, so a try sends those again under
    # their ids (counted once, `link_stats.Counted`) and counts nothing twice.
    counted: set[str] = field(default_factory=set)
    counting: list[tuple[frozenset[str], link_stats.Counted]] = field(default_factory=list)

    def jobs(self) -> Iterator[Job]:
        yield from (c.job for c in self.copies)
        yield from (f.job for f in self.failures)
        yield from self.already_there
        yield from (job for job, _ in self.parked)

    def __bool__(self) -> bool:
        return any(True for _ in self.jobs())

    def copy(self) -> Cycle:
        """A copy of its lists (`finish_cycle` adds to them: a retry starts from what ended)."""
        return Cycle(list(self.copies), list(self.failures), list(self.already_there), list(self.parked),
                     list(self.tokens), self.counted, self.counting)

    def merge(self, other: Cycle) -> None:
        """Take `other`'s items too (a settling that failed, to be tried again with this one)."""
        self.copies += other.copies
        self.failures += other.failures
        self.already_there += other.already_there
        self.parked += other.parked
        self.tokens += [token for token in other.tokens if token not in self.tokens]
        self.counted |= other.counted
        self.counting += [sent for sent in other.counting if sent not in self.counting]


def dest_path(job: Job) -> str:
    """Where the copy's bytes go on its destination: the path of the replica there that an earlier
    attempt left (`bad`, `unavailable`, `lost`, `copying`: registered again in place, it keeps its
    path, maybe a moved file's), else the file's LFN."""
    assert job.dest is not None and job.file is not None
    there = next((r for r in job.file.get("replicas", []) if r.get("se") == job.dest.name), None)
    return storage_lfn(job.lfn, there) if there is not None else job.lfn


async def start_copies(ctx: Context, jobs: Sequence[Job], cycle: Cycle) -> list[Job]:
    """Register the destination replicas of the copies about to start; returns the jobs to copy.
    The others ended here and go to `cycle` (the file was there already, or it failed)."""
    wanted: list[Job] = []
    for job in jobs:
        assert job.dest is not None and job.file is not None
        try:  # before anything is registered: an SE switched off for writing fails here
            job.dest_eps = endpoints(job.dest, dest_path(job), "write", credentials=ctx.credentials)
        except CairnError as exc:
            cycle.failures.append(Failed(job, classify(exc)))
            continue
        wanted.append(job)
    pushed: set[tuple[str, str]] = set()  # replicas made now: held by the transfers from their push
    try:
        statuses = await destination.register_copying_many(
            ctx.db, [(job.file, job.dest) for job in wanted if job.file is not None and job.dest is not None], pushed)
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
                # Waiting for a deletion to finish is no copy tried: nothing to discard, no link to blame.
                cycle.failures.append(Failed(job, classify(exc), attempted=not isinstance(exc, ReplicaBeingRemoved)))
                wanted.remove(job)
    ready: list[Job] = []
    for job in wanted:
        assert job.dest is not None
        if statuses[(job.lfn, job.dest.name)] == "available":
            cycle.already_there.append(job)
        else:
            ready.append(job)
    # Replicas found there already (an earlier attempt's, an upload's) are held in one more round.
    held = {job.id for job in await _hold(ctx, [job for job in ready if _place(job) not in pushed], cycle)}
    ready = [job for job in ready if _place(job) in pushed or job.id in held]
    landed = await _landed_earlier(ctx, [job for job in ready if job.id in held])
    cycle.already_there += landed
    ready = [job for job in ready if job not in landed]
    await rq.flag_copying_replicas(ctx.db, [job.id for job in ready])
    return ready


async def _landed_earlier(ctx: Context, jobs: list[Job]) -> list[Job]:
    """The jobs whose earlier attempt (killed, or its lease lost, between its copy and its
    confirmation) left the file whole at the replica's URL: their replica is confirmed as that
    copy's, not copied again (the copy is counted once, `count_earlier_copy`). Only takeovers
    (`copying_replica` on the request) look, where the destination is a local file system (`file`:
    a stat and a checksum read here, bounded by the file's size). Not over a remote protocol: a
    killed worker's third-party copy may still be running on the destination server, whose
    checksum query then waits for it (gfal2's call blocked the worker's cycle for minutes under
    the reliability test's kills), nor on tape (a checksum may wait for a recall); those are
    copied again, as before."""
    earlier = [job for job in jobs if job.request.get("copying_replica") and job.dest_eps
               and job.dest is not None and job.dest.kind != "tape" and job.dest_eps[0].scheme == "file"]
    whole = await asyncio.gather(*(destination.holds_whole(job.dest_eps[0], job.file or {}) for job in earlier))
    landed: list[Job] = []
    for job, found in zip(earlier, whole, strict=True):
        assert job.dest is not None and job.file is not None
        record = destination.copying_record(job.file, job.dest.name)
        if found and await destination.confirm_many(ctx.db, {job.lfn: (job.dest.name, record)}):
            landed.append(job)
    return landed


def _place(job: Job) -> tuple[str, str]:
    assert job.dest is not None
    return job.lfn, job.dest.name


async def _hold(ctx: Context, jobs: list[Job], cycle: Cycle) -> list[Job]:
    """Hold the jobs' `copying` destination replicas for the transfers (`upload_leases`); returns
    the jobs holding theirs. One an upload holds is not copied over: its request waits and tries
    again (no copy tried: nothing discarded, no link blamed)."""
    refused = await hold_for_transfers(ctx.db, [(job.lfn, job.dest.name) for job in jobs if job.dest is not None])
    held: list[Job] = []
    for job in jobs:
        assert job.dest is not None
        why = refused.get((job.lfn, job.dest.name))
        if why is None:
            held.append(job)
        else:
            cycle.failures.append(Failed(job, Failure(DESTINATION_IN_PROGRESS, why, permanent=False), attempted=False))
    return held


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


async def _confirmed(ctx: Context, copies: Sequence[Copied], cycle: Cycle) -> tuple[list[Copied], set[str]]:
    """The copies whose replica is `available` now, and the requests of the others (their replica
    changed during the copy): each made a copy that counts, in the write ending its attempt as
    failed (added to `cycle`). Counted there, not here: a settling tried again whole (the worker
    keeps one that failed) comes here again, and a `$inc` here counted the copy once per try."""
    if not copies:
        return [], set()
    confirmed = await _confirm(ctx, copies)
    good: list[Copied] = []
    changed: set[str] = set()
    for copied in copies:
        job = copied.job
        if job.dest is None:
            continue
        if (job.lfn, job.dest.name) in confirmed:
            good.append(copied)
        else:
            changed.add(job.id)
            cycle.failures.append(Failed(job, Failure(
                "replica_changed", f"{job.lfn}: the replica on {job.dest.name} changed during the copy", False)))
    return good, changed


async def _count_links(ctx: Context, cycle: Cycle, outcomes: Mapping[str, link_stats.Outcome],
                       db_commands: int) -> None:
    """Count the outcomes on their links, then on the hourly series, under an id per try of
    this settling (`link_stats.Counted`): what an earlier try sent is sent again under its id
    (its writes may have landed, their replies lost: counted once), what it counted is not sent."""
    sent = {rid for rids, _ in cycle.counting for rid in rids}
    fresh = {rid: outcome for rid, outcome in outcomes.items() if rid not in cycle.counted and rid not in sent}
    if fresh:
        cycle.counting.append((frozenset(fresh), link_stats.Counted(list(fresh.values()), db_commands)))
    counts = [count for _, count in cycle.counting]
    await link_stats.record_links(ctx.db, counts)
    await link_stats.record_series(ctx.db, counts)
    for rids, _ in cycle.counting:
        cycle.counted |= rids
    cycle.counting.clear()


def _ends(good: Sequence[Copied], cycle: Cycle) -> list[rq.End]:
    """The request ends of a cycle's verified copies, files found there and requests parked."""
    def end(job: Job, fields: dict[str, Any], **kw: Any) -> rq.End:
        return rq.End(job.id, fields, attempts=job.request.get("attempts"), **kw)
    return [
        *(end(c.job, rq.done_fields(c.summary()), final=True, copied=True) for c in good),
        *(end(job, rq.done_fields({"already_there": True}), final=True) for job in cycle.already_there),
        *(end(job, {"state": "staging", "stage": stage, "recall": None}, final=False) for job, stage in cycle.parked),
    ]


async def finish_cycle(ctx: Context, cycle: Cycle, *, db_commands: int = 0) -> list[tuple[Job, bool]]:
    """Take the steps after everything that ended in a cycle; returns each job that ended with
    whether it stands (True: copied, or there already; False: it failed, or its replica changed
    during the copy). Parked jobs have not ended and are not returned."""
    for job in cycle.jobs():
        job.ending = True
    good, changed = await _confirmed(ctx, cycle.copies, cycle)
    for job in cycle.already_there:
        await count_earlier_copy(ctx, job)
    decided = await failed_copies.decide(ctx, cycle.failures)
    for item in decided:  # a copy made whose replica changed: counted by its end, once (`_confirmed`)
        if item.failed.job.id in changed:
            item.end = dataclasses.replace(item.end, copied=True)
    ended = await rq.end_many(ctx.db, [*_ends(good, cycle), *(d.end for d in decided)], ctx.worker,
                              tokens=cycle.tokens)
    failures = await failed_copies.after_end(ctx, decided, ended)
    for rid in [*(copied.job.id for copied in good), *sorted(changed)]:
        if rid not in ended:  # the lease was lost meanwhile; the copy still happened: count it (once)
            await rq.count_unfinished_copy(ctx.db, rid)
    # A recall asked for a request cancelled meanwhile is recorded nowhere: its parking did not
    # take. Released below, else it stayed pinned for its lifetime. Not one whose request was taken
    # over (its new holder asks again under the id noted, `transfer.stage`) or that an earlier try
    # of this settling parked already (a retry after an outage): that is the request's pin.
    unparked = {job.id: (job, stage) for job, stage in cycle.parked if job.id not in ended}
    cancelled = await recalls.cancelled_among(ctx.db, list(unparked)) if unparked else set()
    # The last database steps: a settling cut short before them is tried again whole (the worker
    # keeps it), and the ends it wrote come back by their tokens; one cut after them is not.
    outcomes = {**{c.job.id: link_stats.Outcome(*c.job.link, True, c.result.bytes, c.result.seconds, c.result.mode,
                                                activity=c.job.request.get("activity", "default"), vo=c.job.vo)
                   for c in good}, **failures}
    await _count_links(ctx, cycle, outcomes, db_commands)
    await asyncio.gather(*(release_pin(ctx, job) for job in [*(c.job for c in good), *cycle.already_there]
                           if job.id in ended))
    await asyncio.gather(*(release_recall(ctx, job.source.se if job.source else None, stage, job.lfn)
                           for job, stage in (unparked[rid] for rid in cancelled)))
    return [*((c.job, True) for c in good), *((job, True) for job in cycle.already_there),
            *((f.job, False) for f in cycle.failures)]
