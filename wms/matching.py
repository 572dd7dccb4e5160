"""Matching: give a pilot the best eligible job, atomically.

Order of preference, recomputed at every match (two-level fair share, as DIRAC's):
1. fair share between VOs: the VO with the lowest (its groups' jobs at pilots / the VO's share,
   `catalogue.vos.fair_shares`) goes first, so a VO with twice the share may hold twice the pilots;
2. within it, fair share between the VO's groups: lowest (jobs at pilots / group share) first;
3. within the group, the task queue of highest priority, then the older queue id order;
4. within a queue, the oldest job.
A pilot the factory submitted gets the job added to its pilot document, and the job names the
pilot's batch id (`batch_id`), so each leads to the other.
The claim is a `$pop` on the task queue document, then the insert of the attempt's claim
document (`job_claims.claim_attempt`), so a stale id (a job killed or matched meanwhile) is skipped,
never run twice. Every query on the way is an `_id` lookup or a read of a small collection (task
queues, one usage document per group; the VO registry is cached): matching cost does not grow
with the number of jobs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.replica_urls import se_url
from catalogue.storage_elements import fetch_storage_elements
from catalogue.storage_paths import storage_lfn
from catalogue.vos import fair_shares
from kernel.db import Document
from kernel.errors import InvalidInput
from wms import job_claims, jobs, pilot_records, states, task_queues
from wms.outputs import output_destinations

log = logging.getLogger("cairn.wms.matcher")


@dataclass(frozen=True)
class PilotOffer:
    """What a pilot brings: where it runs and what it can give a job."""

    pilot: str
    site: str
    cpu: int = 1
    memory_mb: int = 2048
    tags: Sequence[str] = field(default_factory=tuple)


def fair_share_order(queues: Sequence[Document], usage: Mapping[str, Document],
                     vo_shares: Mapping[str, float] | None = None) -> list[Document]:
    """Queues in the order the matcher tries them (see the module docstring). `usage` holds every
    group's jobs at pilots and share (task_queues.all_group_usage); `vo_shares` each VO's share
    (a VO not listed has 1)."""
    shares = vo_shares or {}
    at_pilots: dict[str, int] = {}
    for group, entry in usage.items():
        vo = task_queues.group_vo(group)
        at_pilots[vo] = at_pilots.get(vo, 0) + max(0, int(entry.get("running", 0)))

    def vo_load(vo: str) -> float:
        return at_pilots.get(vo, 0) / (float(shares.get(vo, 1.0)) or 1e-9)

    def load(group: str) -> float:
        entry = usage.get(group, {})
        share = float(entry.get("share", 1.0)) or 1e-9
        return max(0, int(entry.get("running", 0))) / share

    return sorted(queues, key=lambda q: (vo_load(task_queues.group_vo(q["group"])), load(q["group"]),
                                         -int(q["priority"]), q["_id"]))


async def match(db: AsyncDatabase[Document], offer: PilotOffer) -> Document | None:
    """The job this pilot should run next (now `matched` to it), or None when nothing fits."""
    queues = await task_queues.eligible_queues(db, offer.site, offer.cpu, offer.memory_mb, offer.tags)
    if not queues:
        return None
    usage = {u["_id"]: u for u in await task_queues.all_group_usage(db)}
    for queue in fair_share_order(queues, usage, await fair_shares(db)):
        while (popped := await task_queues.pop(db, queue["_id"])) is not None:
            job = await _take(db, *popped, offer)
            if job is not None:
                return job
    return None


async def _take(db: AsyncDatabase[Document], job_id: str, attempt: int, offer: PilotOffer) -> Document | None:
    if not await job_claims.claim_attempt(db, job_id, attempt, offer.pilot):
        log.info("job %s attempt %s was killed or matched already; skipped", job_id, attempt)
        return None
    at = jobs.now()
    record = await pilot_records.took_job(db, offer.pilot, job_id)
    batch = {"batch_id": record.get("batch_id"), "pilot_queue": record.get("queue")} if record else {}
    job = await jobs.set_state_claimed(
        db, job_id, states.MATCHED, f"matched to pilot {offer.pilot} at {offer.site}",
        set_fields={"pilot": offer.pilot, "site": offer.site, "matched_at": at, "heartbeat_at": at, **batch},
    )
    if job is None:
        return None
    if job.get("kill_requested"):
        await jobs.transition(db, job_id, [states.MATCHED], states.KILLED, "killed by request")
        return None
    await task_queues.add_running(db, job["group"], +1)
    return job


async def inputs_inside_their_ses(db: AsyncDatabase[Document], items: Sequence[Document]) -> list[Document]:
    """The resolved inputs with each replica's URL re-derived on its SE; a replica whose stored URL
    is not its SE's URL for the LFN is left out, so a pilot never reads a path outside an SE.
    Each replica carries its SE's definition (`se_config`, no secrets), from which the pilot
    takes the protocol's options as transfer workers do (`transfers.endpoints`)."""
    ses = await fetch_storage_elements(db, {r.get("se", "") for item in items for r in item["replicas"]})
    out = []
    for item in items:
        kept = []
        for replica in item["replicas"]:
            se = ses.get(replica.get("se", ""))
            with contextlib.suppress(InvalidInput):
                if se is not None:
                    url = se_url(se, storage_lfn(item["lfn"], replica), replica.get("url") or None)
                    kept.append({**replica, "url": url,
                                 "se_config": se.model_dump(mode="json")})
        out.append({**item, "replicas": kept})
    return out


async def work_order(db: AsyncDatabase[Document], job: Document) -> dict[str, Any]:
    """What the pilot needs to run a matched job: payload, inputs to fetch and where outputs go.

    Inputs come with their disk replicas, site-local ones first; outputs with the URL on their
    destination SE for this attempt (`outputs.output_destinations`).
    """
    desc = job["description"]
    site = job.get("site", "")
    inputs = []
    for item in await inputs_inside_their_ses(db, job.get("resolved_inputs", [])):
        ordered = sorted(item["replicas"], key=lambda r: (r.get("site") != site, r.get("se", "")))
        inputs.append({"lfn": item["lfn"], "adler32": item.get("adler32"), "size": item.get("size"),
                       "replicas": ordered})
    outputs = await output_destinations(db, job)
    return {
        "id": job["_id"],
        "attempt": job["attempt"],
        "owner": job["owner"],
        "executable": desc["executable"],
        "arguments": desc["arguments"],
        "time_limit_s": desc["time_limit_s"],
        "inputs": inputs,
        "outputs": outputs,
    }
