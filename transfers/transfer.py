"""One transfer request, from its claim to its end: choose the source, stage it if it is on tape,
register the destination replica `copying`, copy with `transfers.negotiation.copy_between`
(third-party when both SEs flag a protocol family for it, else streamed through the worker),
verify adler32 against the catalogue, flip the replica to `available`, and finish the request —
or classify the failure, fail over to another source, back off and retry, or give up. A request
that had its source staged releases its pin on the tape's disk cache when it ends (done or
failed for good; as FTS does), leaving other requests' pins on the same copy. The worker
daemon (`transfers.worker`) only schedules these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from catalogue.replica_health import report_suspicious
from catalogue.replicas import set_replica_status
from catalogue.storage_elements import StorageElement
from kernel.db import Document, database_errors
from kernel.errors import CairnError
from kernel.settings import TransferSettings
from storage_plugins.registry import plugin_for
from storage_plugins.tape import TapePlugin
from transfers import destination, link_stats
from transfers import requests as rq
from transfers.endpoints import Endpoint, endpoints, tape_endpoint
from transfers.failures import CHECKSUM, NO_SOURCE, NO_SUCH_FILE, SOURCE_MISSING, Failure, classify
from transfers.negotiation import copy_between
from transfers.sources import Source, rank_sources

log = logging.getLogger("cairn.transfers")


@dataclass
class Context:
    """What every transfer of one worker shares."""

    db: AsyncDatabase[Document]
    worker: str
    settings: TransferSettings
    credentials: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    suspicious_threshold: int = 3  # reports of a missing source that mark it lost


@dataclass
class Job:
    """A claimed transfer, planned: copy from `source`, or end it at once (`outcome`)."""

    request: Document
    outcome: Literal["copy", "done", "failed", "stage"]
    file: Document | None = None
    dest: StorageElement | None = None
    source: Source | None = None
    sources: list[Source] = field(default_factory=list)
    failure: Failure | None = None
    staged_on: StorageElement | None = None  # the tape SE holding this request's pin, if it staged

    @property
    def id(self) -> str:
        return str(self.request["_id"])

    @property
    def lfn(self) -> str:
        return str(self.request["lfn"])

    @property
    def link(self) -> tuple[str, str]:
        return (self.source.se.name if self.source else "?", str(self.request["dest_se"]))


async def plan(ctx: Context, request: Document, ses: Mapping[str, StorageElement]) -> Job:
    """Decide what to do with a claimed transfer (reads the file; asks a tape SE if it is online)."""
    job = Job(request, "failed", staged_on=ses.get((request.get("stage") or {}).get("se", "")))
    lfn, dest_name = request["lfn"], request["dest_se"]
    with database_errors():
        file_doc = await ctx.db[FILES].find_one({"_id": lfn})  # `_id` alone: the cheapest read everywhere
    if file_doc is None:
        job.failure = Failure(NO_SUCH_FILE, f"{lfn}: no such file", permanent=True)
        return job
    job.file, job.dest = file_doc, ses.get(dest_name)
    if job.dest is None:
        job.failure = Failure(NO_SOURCE, f"SE {dest_name} does not exist", permanent=True)
        return job
    if any(r.get("se") == dest_name and r.get("status") == "available" for r in file_doc.get("replicas", [])):
        job.outcome = "done"
        return job
    failed_on = request.get("failed_sources", [])
    sources = [s for s in rank_sources(file_doc, ses, job.dest, only_se=request.get("source_se"),
                                       failed_on=failed_on)
               if s.se.name not in failed_on]
    if not sources:
        why = "every source failed" if failed_on else "no available replica on a readable SE"
        job.failure = Failure(NO_SOURCE, f"{lfn}: no source to copy from ({why})", permanent=True)
        return job
    job.outcome, job.source, job.sources = "copy", sources[0], sources
    if sources[0].on_tape and not await _online(ctx, sources[0], lfn):
        job.outcome = "stage"
    return job


def _tape(ctx: Context, se: StorageElement, lfn: str, url: str | None) -> tuple[TapePlugin, str]:
    return tape_endpoint(se, lfn, credentials=ctx.credentials, registered_url=url)


async def _online(ctx: Context, source: Source, lfn: str) -> bool:
    plugin, url = _tape(ctx, source.se, lfn, source.url)
    return await plugin.is_online(url)


async def release_pin(ctx: Context, job: Job) -> None:
    """The request has ended: drop the pin its bring-online request holds on the staged copy.

    Only the pin of this request goes (another transfer reading the same copy keeps its own);
    a release that fails is logged, and the pin then lapses after `pin_lifetime_s`."""
    stage_doc = job.request.get("stage") or {}
    if job.staged_on is None or not stage_doc.get("request_id"):
        return
    try:
        plugin, url = _tape(ctx, job.staged_on, job.lfn, stage_doc.get("url"))
        await plugin.release(url, request_id=stage_doc["request_id"])
    except CairnError as exc:
        log.warning("%s: could not release the pin on %s: %s", job.lfn, job.staged_on.name, exc.message)


async def stage(ctx: Context, job: Job) -> None:
    """Every source is on tape and offline: ask for it to be brought online and park the request."""
    assert job.source is not None
    plugin, url = _tape(ctx, job.source.se, job.lfn, job.source.url)
    request_id = await plugin.bring_online([url], pin_lifetime_s=ctx.settings.pin_lifetime_s)
    await rq.park_for_staging(ctx.db, job.id, ctx.worker, stage={
        "se": job.source.se.name, "url": url, "request_id": request_id, "next_poll": rq.now()})
    log.info("%s: staging from %s (%s)", job.lfn, job.source.se.name, request_id)


async def count_earlier_copy(ctx: Context, job: Job) -> None:
    """Found at the destination although an earlier attempt of this very request had registered
    its replica `copying` (and nobody removed it): that attempt made the copy and was stopped
    (killed, or its lease lost) before it could finish the request. Its copy is counted here,
    unless that attempt counted it meanwhile (see `rq.count_unfinished_copy`)."""
    if job.request.get("copying_replica"):
        await rq.count_unfinished_copy(ctx.db, job.id)


async def finish_without_copy(ctx: Context, job: Job) -> None:
    """End a request the plan already settled: the file is there, or there is nothing to do."""
    ended = False
    if job.outcome == "done":
        await count_earlier_copy(ctx, job)
        ended = await rq.complete(ctx.db, job.id, ctx.worker, {"already_there": True})
    elif job.failure is not None:
        ended = await rq.fail(ctx.db, job.id, ctx.worker, job.failure.message, job.failure.reason)
    if ended:
        await release_pin(ctx, job)


def dest_endpoint(ctx: Context, se: StorageElement, lfn: str) -> Endpoint | None:
    """Where a destination replica's bytes are (to delete what an unfinished copy left)."""
    with contextlib.suppress(CairnError):
        return endpoints(se, lfn, "write", credentials=ctx.credentials)[0]
    return None


async def run_copy(ctx: Context, job: Job) -> bool:
    """Copy, verify, register; on failure classify, clean up and retry, fail over or give up.

    True when the file is at the destination (copied now or found there)."""
    assert job.source is not None and job.dest is not None and job.file is not None
    source, dest, lfn = job.source, job.dest, job.lfn
    dest_eps: list[Endpoint] = []
    try:
        # Before anything is registered: an SE switched off for writing fails here.
        dest_eps = endpoints(dest, lfn, "write", credentials=ctx.credentials)
        status = await destination.register_copying(ctx.db, lfn, dest, file_doc=job.file)
        if status == "available":
            await count_earlier_copy(ctx, job)
            if await rq.complete(ctx.db, job.id, ctx.worker, {"already_there": True}):
                await release_pin(ctx, job)
            return True
        await rq.flag_copying_replica(ctx.db, job.id)
        # The one copy path of Cairn: TPC over the best family both SEs flag, else a stream.
        result = await asyncio.wait_for(
            copy_between(source.se, dest, lfn, source_url=source.url, expected_adler32=job.file["adler32"],
                         credentials=ctx.credentials, timeout_s=ctx.settings.copy_timeout_s),
            timeout=ctx.settings.copy_timeout_s,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await _failed(ctx, job, classify(exc), dest_eps[0] if dest_eps else None)
        return False
    if not await destination.confirm(ctx.db, lfn, dest.name):
        await rq.count_copy(ctx.db, job.id)
        failure = Failure("replica_changed", f"{lfn}: the replica on {dest.name} changed during the copy", False)
        await _failed(ctx, job, failure, dest_eps[0])
        return False
    await link_stats.record(ctx.db, source.se.name, dest.name, ok=True, nbytes=result.bytes, seconds=result.seconds,
                            mode=result.mode, activity=job.request.get("activity", "default"))
    done = await rq.complete(ctx.db, job.id, ctx.worker, {
        "source_se": source.se.name, "mode": result.mode, "protocol": result.protocol, "bytes": result.bytes,
        "adler32": result.adler32, "seconds": round(result.seconds, 3)}, copied=True)
    if done:
        await release_pin(ctx, job)
    else:  # the lease was lost meanwhile; the copy still happened, so count it (once)
        await rq.count_unfinished_copy(ctx.db, job.id)
    return True


async def _source_is_corrupt(ctx: Context, job: Job) -> bool:
    """After a checksum mismatch: does the source itself hold the wrong bytes?"""
    assert job.source is not None and job.file is not None
    try:
        ep = endpoints(job.source.se, job.lfn, "read", credentials=ctx.credentials,
                       registered_url=job.source.url)[0]
        actual = await plugin_for(ep.url, ep.options).checksum(ep.url)
    except CairnError:
        return False
    return actual.lower() != str(job.file["adler32"]).lower()


async def _failed(ctx: Context, job: Job, failure: Failure, dest_ep: Endpoint | None) -> None:
    assert job.source is not None and job.dest is not None
    source = job.source.se.name
    await destination.discard(ctx.db, job.lfn, job.dest.name, dest_ep)
    await rq.clear_copying_replica(ctx.db, job.id)
    await link_stats.record(ctx.db, source, job.dest.name, ok=False, reason=failure.reason,
                            activity=job.request.get("activity", "default"))
    failed_sources = list(job.request.get("failed_sources", []))
    fail_over = False
    if failure.reason == CHECKSUM and await _source_is_corrupt(ctx, job):
        await set_replica_status(ctx.db, job.lfn, source, "bad", expected="available")
        failure = Failure(CHECKSUM, f"{failure.message} (the replica on {source} is corrupt: marked bad)", False)
        fail_over = True
    elif failure.reason == SOURCE_MISSING:
        await report_suspicious(ctx.db, job.lfn, source, threshold=ctx.suspicious_threshold, reason=failure.message)
        fail_over = True
    if fail_over:
        failed_sources.append(source)
        if len(job.sources) > 1:
            log.info("%s: %s; failing over from %s", job.lfn, failure.message, source)
            await rq.retry_later(ctx.db, job.id, ctx.worker, failure.message, delay_s=0,
                                 update={"failed_sources": failed_sources, "error_class": failure.reason})
            return
        failure = Failure(failure.reason, f"{failure.message}; no other source", permanent=True)
    if await rq.fail_or_retry(ctx.db, job.request, ctx.worker, failure, base_s=ctx.settings.retry_base_s,
                              cap_s=ctx.settings.retry_cap_s):
        await release_pin(ctx, job)


async def abandon(ctx: Context, request_id: str, lfn: str, dest: StorageElement | None, *, stopping: bool) -> None:
    """After a copy was interrupted (lease lost or worker stopping): clean up what is ours.

    The request still ours (stopping) → its replica is removed and the request released;
    ended meanwhile (cancelled) → its replica is removed; taken over by another worker → left alone.
    """
    doc = await rq.get_request(ctx.db, request_id)
    if doc is None or dest is None:
        return
    ours = doc.get("state") == "active" and doc.get("lease_owner") == ctx.worker
    if ours or doc.get("state") in rq.FINAL_STATES:
        await destination.discard(ctx.db, lfn, dest.name, dest_endpoint(ctx, dest, lfn))
        await rq.clear_copying_replica(ctx.db, request_id)
    if ours and stopping:
        await rq.release(ctx.db, request_id, ctx.worker)


async def sweep_ended(ctx: Context, ses: Mapping[str, StorageElement]) -> int:
    """Remove `copying` replicas left by requests that ended without their worker (cancelled
    while it was dead, say); returns how many requests were cleaned."""
    cleaned = 0
    for doc in await rq.ended_with_copying_replica(ctx.db):
        se = ses.get(doc.get("dest_se") or "")
        if se is not None:
            await destination.discard(ctx.db, doc["lfn"], se.name, dest_endpoint(ctx, se, doc["lfn"]))
        await rq.clear_copying_replica(ctx.db, doc["_id"])
        cleaned += 1
    return cleaned

