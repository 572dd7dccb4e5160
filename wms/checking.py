"""The checker's decisions: resolve a batch of jobs' input data and place each job.

One catalogue query per batch resolves every input LFN of every job to its replicas. Then
each job either waits in the task queue of its candidate sites, waits in `staging` while its
tape-only inputs are copied to disk at the best site, or fails naming the inputs that exist
nowhere. Jobs in `staging` are checked again every `staging_recheck_s`; they fail when a
transfer they asked for failed. A job whose checking raises fails alone, saying why
(`wms.unprocessable`), and the others go on. A job runs only at its VO's sites when the VO lists any
(`placement.allowed_sites`), so its task queue, and the pilot factory's demand at a site, count
it only there.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import fetch_directories
from catalogue.lfn import ancestors, check_lfn
from catalogue.permissions import READ, hiding_denial, se_in_vo
from catalogue.replicas import get_replicas
from catalogue.storage_paths import PATH_LFN
from catalogue.vos import confine_owner, registry
from kernel import claims
from kernel.daemon import one_of_many
from kernel.db import Document
from kernel.principal import DEFAULT_VO, Principal
from transfers.queueing import submit_transfers
from transfers.request_reads import list_requests
from wms import checker_claims, input_data, job_reads, jobs, stage_requests, states, task_queues, unprocessable
from wms.config import WmsSettings
from wms.input_data import SiteStore
from wms.outputs import owner_of
from wms.placement import Placement, allowed_sites, disk_se_at, place, staging_site, usable_replicas
from wms.stage_requests import requester_of
from wms.task_queues import QueueKey

log = logging.getLogger("cairn.wms.checker")


def readable_by_owner(
    owner: Principal, files: Mapping[str, Document], dirs: Mapping[str, Document]
) -> dict[str, Document]:
    """The input files the job's owner may read now: submission lets a hidden input through like
    a missing one (so it reveals nothing), and here it is treated as missing too (the job fails
    naming it), so a job never reads what its owner cannot (`catalogue.authorization`); `owner`
    is `owner_of(job)` confined to its VO."""
    return {lfn: doc for lfn, doc in files.items() if hiding_denial(owner, lfn, doc, READ, dirs) is None}


async def check_batch(db: AsyncDatabase[Document], config: WmsSettings, worker: str) -> int:
    """One checker pass over new jobs and due staging jobs; returns how many were handled."""
    claim = f"{worker}:{uuid.uuid4().hex[:8]}"
    batch = await checker_claims.claim_batch(db, states.RECEIVED, states.CHECKING, claim, config.check_batch)
    due = await checker_claims.claim_batch(
        db, states.STAGING, states.STAGING, claim, config.check_batch, due_before=jobs.now()
    )
    batch += due
    if not batch:
        return 0
    outcomes: dict[str, Document] = {}
    inputs: dict[str, list[str]] = {}
    for job in batch:
        lfns, why = await one_of_many(_inputs_of(job), f"job {job['_id']}", log)
        if why is None:
            inputs[job["_id"]] = lfns or []
        else:
            outcomes[job["_id"]] = _unprocessable(why)
    # the one catalogue query of this pass
    files, _ = await get_replicas(db, sorted({lfn for lfns in inputs.values() for lfn in lfns}))
    dirs = await fetch_directories(db, {a for lfn in files for a in ancestors(lfn)})
    ses = await input_data.storage_elements(db)
    vo_sites = {name: vo.sites for name, vo in (await registry(db)).items()}
    queues: dict[QueueKey, list[tuple[str, int]]] = defaultdict(list)
    for job in batch:
        if job["_id"] in outcomes:
            continue
        placed, why = await one_of_many(_check(db, config, job, files, dirs, ses, vo_sites, claim),
                                        f"job {job['_id']}", log)
        if placed is None:
            outcomes[job["_id"]] = _unprocessable(str(why))
            continue
        outcomes[job["_id"]], queued = placed
        if queued is not None:
            queues[queued[0]].append((job["_id"], queued[1]))
    await checker_claims.apply_outcomes(db, claim, outcomes)
    # Jobs still claimed are those someone asked to kill while this pass held them.
    leftovers = {j["_id"] for j in await checker_claims.claimed_jobs(db, claim)}
    for job_id in leftovers:
        await jobs.transition(db, job_id, [states.CHECKING, states.STAGING], states.KILLED,
                              "killed by request", guard={claims.OWNER: claim}, set_fields=dict(claims.FREE))
        await stage_requests.withdraw(db, job_id)  # this pass may have asked for some, unrecorded
    await _withdraw_left_behind(db, batch, outcomes, leftovers)
    for key, entries in queues.items():
        await enqueue(db, key, [(job_id, attempt) for job_id, attempt in entries if job_id not in leftovers])
    return len(batch)


async def _withdraw_left_behind(
    db: AsyncDatabase[Document], batch: Sequence[Document], outcomes: Mapping[str, Document], leftovers: set[str],
) -> None:
    """Withdraw the transfers asked for by the jobs of the pass that left staging (or were placed
    or failed while recording some, or flagged as asking by a pass stopped before it recorded
    them, `stage_requests.note_asking`) without them, once their outcome is stored: read back,
    since an outcome whose claim was lost meanwhile is not."""
    moved = {job["_id"]: outcomes[job["_id"]]["state"] for job in batch
             if (job.get("transfer_requests") or job.get(stage_requests.HELD)
                 or outcomes.get(job["_id"], {}).get(stage_requests.HELD))
             and job["_id"] not in leftovers and outcomes.get(job["_id"], {}).get("state") != states.STAGING}
    if moved:
        for job in await job_reads.get_jobs(db, list(moved)):
            if job["state"] == moved[job["_id"]] and not job.get(claims.OWNER):
                await stage_requests.withdraw_left(db, job)


async def _inputs_of(job: Document) -> list[str]:
    """A job's input LFNs, each checked as submission did (a job stored before a check existed
    fails alone rather than failing the pass's one catalogue query for every job)."""
    lfns: list[str] = job["description"]["input_data"]
    for lfn in lfns:
        check_lfn(lfn)
    return lfns


def _unprocessable(why: str) -> Document:
    """The outcome of a job whose checking raised (`wms.unprocessable`)."""
    return {"state": states.FAILED, "reason": unprocessable.reason("job-checker", why)}


async def _check(
    db: AsyncDatabase[Document], config: WmsSettings, job: Document, files: Mapping[str, Document],
    dirs: Mapping[str, Document], ses: Mapping[str, SiteStore], vo_sites: Mapping[str, Sequence[str]], claim: str,
) -> tuple[Document, tuple[QueueKey, int] | None]:
    """One job of a pass: the sites its VO allows it, then its placement (`_decide`); its
    outcome, and the task queue it goes to with its attempt (None: it is not queued)."""
    owner = await confine_owner(db, owner_of(job))
    requested = job["description"]["requirements"]["sites"]
    sites = allowed_sites(requested, vo_sites.get(job.get("vo") or DEFAULT_VO, []))
    if sites is None:
        return {"state": states.FAILED, "reason": f"none of the job's sites is a site of VO {job.get('vo')}"}, None
    outcome, key = await _decide(db, config, job, readable_by_owner(owner, files, dirs), ses, sites, owner, claim)
    return outcome, None if key is None else (key, int(job["attempt"]))


async def enqueue(db: AsyncDatabase[Document], key: QueueKey, attempts: Sequence[tuple[str, int]]) -> None:
    """Put waiting jobs (id, attempt) in their task queue, then record that they are there. A job
    that left `waiting` before its entry was pushed (a kill whose `$pull` came first) has its
    entry taken out again here: one pushed after the kill's look stayed, counted, until a pilot's
    pop met it."""
    if not attempts:
        return
    await task_queues.enqueue(db, key, [task_queues.entry(job_id, n) for job_id, n in attempts])
    if await checker_claims.mark_enqueued(db, [job_id for job_id, _ in attempts]) == len(attempts):
        return
    now = {job["_id"]: job for job in await job_reads.get_jobs(db, [job_id for job_id, _ in attempts])}
    for job_id, n in attempts:
        job = now.get(job_id)
        if job is None or job["state"] != states.WAITING or int(job["attempt"]) != n:
            await task_queues.remove(db, key.queue_id, task_queues.entry(job_id, n))


def queue_key(job: Document, sites: Sequence[str]) -> QueueKey:
    """The task queue of a job placed at `sites`."""
    req = job["description"]["requirements"]
    return QueueKey(sites=tuple(sites), tags=tuple(req["tags"]), cpu=req["cpu"], memory_mb=req["memory_mb"],
                    group=job["group"], priority=job["priority"])


async def _decide(
    db: AsyncDatabase[Document], config: WmsSettings, job: Document, files: Mapping[str, Document],
    ses: Mapping[str, SiteStore], sites: Sequence[str], owner: Principal, claim: str,
) -> tuple[Document, QueueKey | None]:
    """Place one job; `sites` are those it may run at (`placement.allowed_sites`; empty: any);
    `owner` (confined to the job's VO) limits the disk SEs its staging copies go to; `claim`, the
    pass's hold on the job."""
    desc = job["description"]
    lfns: list[str] = desc["input_data"]
    placement = place(lfns, files, ses, allowed_sites=sites)
    if placement.missing:
        reason = f"input data missing (no usable replica anywhere): {', '.join(placement.missing[:20])}"
        return {"state": states.FAILED, "reason": reason, "missing": placement.missing}, None
    if placement.tape_only:
        return await _staging_outcome(db, config, job, placement, _vo_disks(ses, owner), sites, claim), None
    if lfns and not placement.sites:
        return {"state": states.FAILED, "reason": "no allowed site can read the input data"}, None
    key = queue_key(job, placement.sites)
    # A list, not a dict keyed by LFN: LFNs contain dots, which field names must not.
    resolved = [
        {"lfn": lfn, "adler32": files[lfn].get("adler32"), "size": files[lfn].get("size"),
         "replicas": [{"se": r["se"], "site": ses[r["se"]].site, "url": r.get("url", ""),
                       **({PATH_LFN: r[PATH_LFN]} if r.get(PATH_LFN) else {})}  # a moved file's path
                      for r in usable_replicas(files[lfn], ses, "disk")]}
        for lfn in dict.fromkeys(lfns)
    ]
    sites_text = ", ".join(placement.sites) or "any site"
    where = "hold all inputs" if placement.all_local else "hold the most inputs"
    reason = f"waiting for a pilot at {sites_text}" + (f" (sites that {where})" if lfns else "")
    outcome = {"state": states.WAITING, "reason": reason, "sites": placement.sites, "task_queue": key.queue_id,
               "resolved_inputs": resolved, "enqueued": False}
    return outcome, key


def _vo_disks(ses: Mapping[str, SiteStore], owner: Principal) -> dict[str, SiteStore]:
    """The SEs with only the disks the owner's VO uses: staging copies land on the VO's own
    storage, as its users' requests must (another VO's disk would hold and count them)."""
    return {name: se for name, se in ses.items() if se.kind != "disk" or se_in_vo(owner, name)}


async def _staging_outcome(
    db: AsyncDatabase[Document], config: WmsSettings, job: Document, placement: Placement,
    ses: Mapping[str, SiteStore], allowed_sites: Sequence[str], claim: str,
) -> Document:
    recheck_at = jobs.now() + dt.timedelta(seconds=config.staging_recheck_s)
    requester = requester_of(job["_id"])
    if job["state"] == states.STAGING:
        failed = [r for r in await _requests_of(db, job) if r["state"] in ("failed", "cancelled")
                  and r["lfn"] in placement.tape_only]
        if failed:
            reason = "staging failed: " + "; ".join(f"{r['lfn']}: {r.get('last_error') or r['state']}"
                                                    for r in failed[:10])
            return {"state": states.FAILED, "reason": reason}
        return {"state": states.STAGING, "reason": job["reason"], "recheck_at": recheck_at, "_push_history": False}
    site = staging_site(placement, ses, allowed_sites)
    dest = disk_se_at(site, ses) if site else None
    if dest is None:
        return {"state": states.FAILED, "reason": "inputs are only on tape and no allowed site has a disk SE"}
    items = [{"lfn": lfn, "dest_se": dest, "source_se": tape} for lfn, tape in sorted(placement.tape_only.items())]
    if not await stage_requests.note_asking(db, job["_id"], claim):
        return {"state": states.FAILED, "reason": "its checker lost it"}  # not stored: the claim is gone
    result = await submit_transfers(db, items, requester=requester, activity="job-staging", priority=4,
                                    vo=job.get("vo"))
    if result["failed"]:
        # (those asked for are withdrawn once this is stored: `_withdraw_left_behind`)
        return {"state": states.FAILED, "reason": f"could not request staging: {result['failed']}",
                stage_requests.HELD: True}
    reason = f"staging {len(items)} tape-only input(s) to {dest} at {site}"
    return {"state": states.STAGING, "reason": reason, "recheck_at": recheck_at, "staging_to": dest,
            "transfer_requests": sorted(result["successful"].values()), stage_requests.HELD: True}


async def _requests_of(db: AsyncDatabase[Document], job: Document) -> list[Document]:
    """The transfers a staging job waits for. By id, not by requester: a job whose copy was already
    asked for (by another job, a rule, a user) reuses that open request instead of making its own."""
    ids = list(job.get("transfer_requests", []))
    return await list_requests(db, {"_id": {"$in": ids}}, limit=len(ids)) if ids else []
