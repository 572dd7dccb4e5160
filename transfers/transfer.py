"""One transfer request, from its claim to its end: choose the source, stage it if it is on tape,
copy with `transfers.negotiation.copy_between` (a small file client-routed by the protocol's own
client where it can, else third-party when both SEs flag a protocol family for it, else streamed
through the worker), verified against the catalogue's adler32 — or
classify the failure. The steps before and after a copy (destination replica `copying`, then
`available` and the request done; or the replica removed and the request failed over, retried
later or given up, `transfers.failed_copies`) are taken for a whole worker cycle at once by
`transfers.copy_steps`. A request that had
its source staged releases its pin on the tape's disk cache when it ends (done or failed for
good; as FTS does), leaving other requests' pins on the same copy. The worker daemon
(`transfers.worker`) only schedules these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import StorageElement
from kernel.db import Document
from kernel.errors import CairnError
from kernel.principal import DEFAULT_VO
from kernel.settings import TransferSettings
from storage_plugins.copy import CopyResult
from storage_plugins.tape import TapePlugin
from transfers import destination, recalls
from transfers import requests as rq
from transfers.endpoints import Endpoint, endpoints, tape_endpoint
from transfers.failures import NO_SOURCE, NO_SUCH_FILE, Failure, classify, file_replaced
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


# Work items compare by identity (eq=False): comparing two by value walked their request and
# file documents and SE models, and a cycle's bookkeeping compares many of them.
@dataclass(eq=False)
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
    # The tape SE of a recall an earlier attempt noted and did not record (`stage`), if any.
    noted_on: StorageElement | None = None
    dest_eps: list[Endpoint] = field(default_factory=list)  # where it is written, best first
    # Set once the request's end is being written: a lease found lost from then on is the
    # request ending, not a reason to stop its work.
    ending: bool = False
    # time.monotonic() until which this worker surely holds the request's lease (`kernel.lease`'s
    # SURE_PART of a lease after its claim or last renewal): its destination is discarded only before.
    held_until: float = float("inf")

    @property
    def id(self) -> str:
        return str(self.request["_id"])

    @property
    def lfn(self) -> str:
        return str(self.request["lfn"])

    @property
    def link(self) -> tuple[str, str]:
        return (self.source.se.name if self.source else "?", str(self.request["dest_se"]))

    @property
    def vo(self) -> str:
        """The VO of the request (link counters are kept per VO too)."""
        return str(self.request.get("vo") or DEFAULT_VO)


@dataclass(eq=False)
class Copied:
    """A copy made and verified, its catalogue and queue steps still to take (`copy_steps`)."""

    job: Job
    result: CopyResult

    def summary(self) -> dict[str, object]:
        """The request's `result` once done."""
        assert self.job.source is not None
        return {"source_se": self.job.source.se.name, "mode": self.result.mode, "protocol": self.result.protocol,
                "bytes": self.result.bytes, "adler32": self.result.adler32, "seconds": round(self.result.seconds, 3)}


@dataclass(eq=False)
class Failed:
    """An attempt that failed, its end still to write (`transfers.failed_copies`). `attempted`: a
    copy was tried (its destination replica is discarded and its link counts the failure);
    False for a request that failed while it was planned."""

    job: Job
    failure: Failure
    attempted: bool = True


async def plan(ctx: Context, request: Document, file_doc: Document | None,
               ses: Mapping[str, StorageElement]) -> Job:
    """Decide what to do with a claimed transfer, given its file as just read (asks a tape SE
    whether the file is online)."""
    job = Job(request, "failed", staged_on=ses.get((request.get("stage") or {}).get("se", "")),
              noted_on=ses.get((request.get("recall") or {}).get("se", "")))
    lfn, dest_name = request["lfn"], request["dest_se"]
    if file_doc is None:
        job.failure = Failure(NO_SUCH_FILE, f"{lfn}: no such file", permanent=True)
        return job
    if replaced := file_replaced(request, file_doc):
        job.failure = replaced
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
    plugin, url = _tape(ctx, source.se, source.path, source.url)
    return await plugin.is_online(url)


async def release_pin(ctx: Context, job: Job) -> None:
    """The request has ended: drop the pin its bring-online request holds on the staged copy.

    Only the pin of this request goes (another transfer reading the same copy keeps its own);
    a release that fails is logged, and the pin then lapses after `pin_lifetime_s`. A recall an
    earlier attempt noted and never recorded (it died between, `stage`) is released too."""
    staged, noted = job.request.get("stage") or {}, job.request.get("recall") or {}
    await release_recall(ctx, job.staged_on, staged, job.lfn)
    if noted.get("request_id") not in (None, staged.get("request_id")):
        await release_recall(ctx, job.noted_on, noted, job.lfn)


async def release_recall(ctx: Context, se: StorageElement | None, stage_doc: Mapping[str, Any], lfn: str) -> None:
    """Drop the pin of bring-online request `stage_doc` (a request's `stage`) on tape SE `se`, or
    stop its recall if it has not staged yet; a release that fails is logged (the pin lapses)."""
    if se is None or not stage_doc.get("request_id"):
        return
    try:
        plugin, url = _tape(ctx, se, stage_doc.get("path") or lfn, stage_doc.get("url"))
        await plugin.release(url, request_id=stage_doc["request_id"])
    except CairnError as exc:
        log.warning("%s: could not release the pin on %s: %s", lfn, se.name, exc.message)


async def stage(ctx: Context, job: Job) -> dict[str, Any]:
    """Every source is on tape and offline: ask for it to be brought online; returns the request's
    `stage` for it to wait in `staging` (`copy_steps.Cycle.parked`). The recall is asked under an
    id noted on the request first (`requests.note_recall`), or under the one an earlier attempt
    noted for the same URL and died before recording (the tape system answers the recall it
    has): a worker killed before its cycle's settling leaves no pin that nobody knows."""
    assert job.source is not None
    plugin, url = _tape(ctx, job.source.se, job.source.path, job.source.url)
    noted = job.request.get("recall") or {}
    request_id = noted.get("request_id") if noted.get("url") == url else None
    if request_id is None:
        request_id = uuid.uuid4().hex
        if not await recalls.note_recall(ctx.db, job.id, ctx.worker, "active", {
                "se": job.source.se.name, "url": url, "path": job.source.path, "request_id": request_id}):
            raise CairnError(f"{job.lfn}: request {job.id} is no longer this worker's; not staged")
    request_id = await plugin.bring_online([url], pin_lifetime_s=ctx.settings.pin_lifetime_s, request_id=request_id)
    log.info("%s: staging from %s (%s)", job.lfn, job.source.se.name, request_id)
    return {"se": job.source.se.name, "url": url, "path": job.source.path, "request_id": request_id,
            "next_poll": rq.now()}


async def count_earlier_copy(ctx: Context, job: Job) -> None:
    """Found at the destination although an earlier attempt of this very request had registered
    its replica `copying` (and nobody removed it): that attempt made the copy and was stopped
    (killed, or its lease lost) before it could finish the request. Its copy is counted here,
    unless that attempt counted it meanwhile (see `rq.count_unfinished_copy`)."""
    if job.request.get("copying_replica"):
        await rq.count_unfinished_copy(ctx.db, job.id)


def dest_endpoint(ctx: Context, se: StorageElement, lfn: str) -> Endpoint | None:
    """Where a destination replica's bytes are (to delete what an unfinished copy left)."""
    with contextlib.suppress(CairnError):
        return endpoints(se, lfn, "write", credentials=ctx.credentials)[0]
    return None


def _size(file_doc: Document) -> int | None:
    size = file_doc.get("size")
    return int(size) if isinstance(size, int) and size >= 0 else None


async def run_copy(ctx: Context, job: Job) -> Copied | Failed:
    """Copy to the `copying` replica `copy_steps.start_copies` registered, verifying adler32.

    A verified copy comes back as `Copied`, a failed one as `Failed` (classified): the steps
    after either are the worker cycle's (`copy_steps.finish_cycle`)."""
    assert job.source is not None and job.dest is not None and job.file is not None
    try:
        # The one copy path of Cairn: TPC over the best family both SEs flag, else a stream.
        result = await asyncio.wait_for(
            copy_between(job.source.se, job.dest, job.lfn, source_url=job.source.url, source_lfn=job.source.path,
                         expected_adler32=job.file["adler32"], expected_size=_size(job.file),
                         credentials=ctx.credentials,
                         timeout_s=ctx.settings.copy_timeout_s, dest_endpoints=job.dest_eps or None,
                         route_below=ctx.settings.route_below_bytes),
            timeout=ctx.settings.copy_timeout_s,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return Failed(job, classify(exc))
    return Copied(job, result)


async def abandon(ctx: Context, request_id: str, lfn: str, dest: StorageElement | None, *, stopping: bool,
                  held_until: float = float("inf")) -> None:
    """After a copy was interrupted (lease lost or worker stopping): clean up what is ours.

    The request still ours (stopping) → its replica is removed and the request released;
    ended meanwhile (cancelled) → its replica is removed; taken over by another worker → left alone
    (and so when still ours once `held_until`, `Job.held_until`, has passed: see `destination.discard_many`).
    """
    doc = await rq.get_request(ctx.db, request_id)
    if doc is None or dest is None:
        return
    ours = doc.get("state") == "active" and doc.get("lease_owner") == ctx.worker
    if ours or doc.get("state") in rq.FINAL_STATES:
        await destination.discard_many(ctx.db, [(lfn, dest.name, dest_endpoint(ctx, dest, lfn))],
                                       {(lfn, dest.name): held_until} if ours else None)
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

