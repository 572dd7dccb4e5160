"""How the failed attempts of a worker cycle end, decided for all of them before one bulk write.

A failed copy's destination replica goes (its bytes first, then every `copying` replica of the
cycle in one bulk pull); a source found corrupt is to be marked bad, a missing one reported (only
once a stat of it confirms it is missing: a NotFound may come from the destination or a
third-party copy's other end, and a healthy replica must not be counted lost for it); and
the request ends by the one fail-or-retry rule (`requests.failure_end`), or fails over at once to
another source when the one tried is bad. The ends themselves are written by the cycle
(`copy_steps.finish_cycle`) in one guarded bulk write with its other ends; only the attempts whose
end that write took count on their links and note their source (`after_end`), so a replay or a
worker whose lease went to a request that ended meanwhile counts nothing twice — and never a done
request as a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from catalogue.replica_health import report_suspicious
from catalogue.replicas import set_replica_status
from catalogue.storage_paths import storage_lfn
from kernel.errors import CairnError, NotFound
from storage_plugins.registry import plugin_for
from transfers import destination, link_stats
from transfers import requests as rq
from transfers.endpoints import Endpoint, endpoints
from transfers.failures import CHECKSUM, DESTINATION_IN_PROGRESS, SOURCE_MISSING, TRANSFER_FAILED, Failure
from transfers.transfer import Context, Failed, Job, dest_endpoint, release_pin

log = logging.getLogger("cairn.transfers")


@dataclass
class Decided:
    """A failed attempt with its request's end, and what to note on its source once that end
    is written ("bad": the source holds wrong bytes; "missing": it holds none)."""

    failed: Failed
    end: rq.End
    note: str | None = None
    # Its destination, not discarded while the lease was surely held (`destination.discard_many`):
    # discarded once its end is written, if that end is final (nothing else would: the end unsets
    # the request's `copying_replica`, by which `transfer.sweep_ended` finds such replicas).
    left: tuple[str, str, Endpoint | None] | None = None


async def _source_is_corrupt(ctx: Context, job: Job) -> bool:
    """After a checksum mismatch: does the source itself hold the wrong bytes?"""
    assert job.source is not None and job.file is not None
    try:
        ep = endpoints(job.source.se, job.source.path, "read", credentials=ctx.credentials,
                       registered_url=job.source.url)[0]
        actual = await plugin_for(ep.url, ep.options).checksum(ep.url)
    except CairnError:
        return False
    return actual.lower() != str(job.file["adler32"]).lower()


async def _source_is_missing(ctx: Context, job: Job) -> bool | None:
    """After a NotFound: is the source replica missing on storage (a stat, as
    `transfers.suspicious` asks before counting a user's report)? None when storage cannot tell."""
    assert job.source is not None
    try:
        ep = endpoints(job.source.se, job.source.path, "read", credentials=ctx.credentials,
                       registered_url=job.source.url)[0]
        await plugin_for(ep.url, ep.options).stat(ep.url)
    except NotFound:
        return True
    except CairnError:
        return None
    return False


async def _missing_source(ctx: Context, job: Job, failure: Failure) -> tuple[Failure, str | None]:
    """A SOURCE_MISSING failure as confirmed: still the source's ("missing" to note), or an
    ordinary failure of the destination or the link (the source is there, or cannot be checked)."""
    assert job.source is not None
    found = await _source_is_missing(ctx, job)
    if found:
        return failure, "missing"
    why = "is there" if found is False else "could not be checked"
    return Failure(TRANSFER_FAILED, f"{failure.message} (the replica on {job.source.se.name} {why}: not reported "
                                    "missing; a failure of the destination or the link)", permanent=False), None


async def _decide(ctx: Context, failed: Failed) -> Decided:
    job, failure = failed.job, failed.failure
    base_s, cap_s = ctx.settings.retry_base_s, ctx.settings.retry_cap_s
    if failure.reason == DESTINATION_IN_PROGRESS:
        return Decided(failed, _wait_for_upload(job, failure, base_s, cap_s))
    if not failed.attempted or job.source is None:
        return Decided(failed, rq.failure_end(job.request, failure, base_s=base_s, cap_s=cap_s))
    source = job.source.se.name
    note = None
    if failure.reason == CHECKSUM and await _source_is_corrupt(ctx, job):
        failure = Failure(CHECKSUM, f"{failure.message} (the replica on {source} is corrupt: marked bad)", False)
        note = "bad"
    elif failure.reason == SOURCE_MISSING:
        failure, note = await _missing_source(ctx, job, failure)
    if note is not None:
        if len(job.sources) > 1:
            log.info("%s: %s; failing over from %s", job.lfn, failure.message, source)
            fields = {"state": "queued", "last_error": failure.message, "error_class": failure.reason,
                      "not_before": rq.now(), "failed_sources": [*job.request.get("failed_sources", []), source]}
            return Decided(failed, rq.End(job.id, fields, final=False, attempts=job.request.get("attempts"),
                                          clear_copying=True), note)
        failure = Failure(failure.reason, f"{failure.message}; no other source", permanent=True)
    end = rq.failure_end(job.request, failure, base_s=base_s, cap_s=cap_s)
    return Decided(failed, dataclasses.replace(end, clear_copying=True), note)


def _wait_for_upload(job: Job, failure: Failure, base_s: float, cap_s: float) -> rq.End:
    """An upload holds the destination replica: the request waits and tries again, the attempt
    given back (an upload may take longer than the attempts' backoffs; a dead one's hold is
    taken over LEASE_S after it fell silent, `catalogue.upload_leases`)."""
    attempts = int(job.request.get("attempts", 1))
    given_back = max(0, attempts - 1)
    end = rq.failure_end({**job.request, "attempts": given_back}, failure, base_s=base_s, cap_s=cap_s,
                         update={"attempts": given_back})
    return dataclasses.replace(end, attempts=job.request.get("attempts"))


async def decide(ctx: Context, failures: Sequence[Failed]) -> list[Decided]:
    """Discard the failed copies' destination replicas (their bytes, then the replicas in one
    bulk pull) and decide how each request ends."""
    for failed in failures:
        failed.job.ending = True
    held_until: dict[tuple[str, str], float] = {}  # see `destination.discard_many`
    for f in failures:
        if f.job.dest is not None:
            place = (f.job.lfn, f.job.dest.name)
            held_until[place] = min(held_until.get(place, f.job.held_until), f.job.held_until)
    targets = {(f.job.lfn, f.job.dest.name): (f.job.lfn, f.job.dest.name, f.job.dest_eps[0] if f.job.dest_eps else None)
               for f in failures if f.attempted and f.job.dest is not None}
    left = await destination.discard_many(ctx.db, list(targets.values()), held_until)
    decided = [await _decide(ctx, failed) for failed in failures]
    # A request failing for good before its copy was tried (no source left, say), whose earlier
    # attempt registered a `copying` replica and was killed: that replica goes too. Its end unsets
    # the request's flag, by which `transfer.sweep_ended` finds such replicas: nothing else would.
    by_earlier = {d.failed.job.id: _left_by_earlier_attempt(ctx, d.failed.job) for d in decided
                  if d.end.final and not d.failed.attempted and d.failed.job.request.get("copying_replica")
                  and d.failed.job.dest is not None and d.failed.job.file is not None}
    left |= await destination.discard_many(ctx.db, list(by_earlier.values()), held_until)
    for d in decided:
        job = d.failed.job
        target = by_earlier.get(job.id) or (targets.get((job.lfn, job.dest.name)) if job.dest is not None
                                            and d.failed.attempted else None)
        if target is not None and target[:2] in left:
            d.left = target
    return decided


def _left_by_earlier_attempt(ctx: Context, job: Job) -> tuple[str, str, Endpoint | None]:
    """`discard_many`'s target for the replica an earlier attempt of job registered (at its path)."""
    assert job.dest is not None and job.file is not None
    there = next((r for r in job.file.get("replicas", []) if r.get("se") == job.dest.name), None)
    return job.lfn, job.dest.name, dest_endpoint(ctx, job.dest, storage_lfn(job.lfn, there or {}))


async def after_end(ctx: Context, decided: Sequence[Decided], ended: set[str]) -> dict[str, link_stats.Outcome]:
    """Once the ends are written: note the sources, release the pins of the requests that failed
    for good; returns the link outcomes to count (those of the attempts this worker ended), by
    request id."""
    outcomes: dict[str, link_stats.Outcome] = {}
    pins: list[Job] = []
    for item in decided:
        job = item.failed.job
        if job.id not in ended:
            continue
        if job.source is not None and item.note == "bad":
            await set_replica_status(ctx.db, job.lfn, job.source.se.name, "bad", expected="available")
        elif job.source is not None and item.note == "missing":
            await report_suspicious(ctx.db, job.lfn, job.source.se.name, threshold=ctx.suspicious_threshold,
                                    reason=item.failed.failure.message)
        if item.failed.attempted:
            outcomes[job.id] = link_stats.Outcome(*job.link, False, reason=item.failed.failure.reason,
                                                  activity=job.request.get("activity", "default"), vo=job.vo)
        if item.end.final:
            pins.append(job)
    await asyncio.gather(*(release_pin(ctx, job) for job in pins))
    # Ended for good by this write: the request is no other worker's to take over.
    left = [item.left for item in decided if item.left is not None and item.end.final and item.failed.job.id in ended]
    await destination.discard_many(ctx.db, left)
    return outcomes
