"""Accepting jobs: expand parametric descriptions, refuse bad input with the reason, store the rest.

Everything is checked before anything is stored, so a refused submission queues nothing:
unknown sites or SEs (another VO's, when the VO lists its own, answer as unknown), input LFNs the
caller may not read (the catalogue's path permissions),
output LFNs that exist already or that the caller may not create, output LFNs repeated within
the submission. Dataset and query inputs are resolved to LFNs first (wms/input_selection.py),
so the checks above apply to the files they stand for.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import se_in_vo
from catalogue.directories import fetch_directories
from catalogue.files import authorized_files, fetch_files
from catalogue.lfn import ancestors, check_lfn
from catalogue.permissions import READ, creation_denial
from catalogue.vos import registry
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput
from kernel.principal import Principal
from wms import input_data, jobs, states
from wms import submission_requests as requests
from wms.description import JobDescription, expand_all
from wms.input_selection import resolve_inputs
from wms.outputs import output_salt


async def submit(
    db: AsyncDatabase[Document], principal: Principal, descriptions: Sequence[JobDescription],
    *, ids: Sequence[str] | None = None, request_id: str | None = None,
) -> list[str]:
    """Validate and store the jobs of a submission; returns their ids in description order.
    `ids` (from `jobs.allocate_ids`, one per concrete job) lets a caller record the ids before
    the jobs exist, so that a retried submission can tell whether they were stored.
    `request_id` names the call: sent again, it answers the jobs its first sending stored
    (`wms.submission_requests`)."""
    expanded = expand_all(descriptions)
    named: list[str] = []
    asked = requests.digest(descriptions) if request_id is not None else ""
    if request_id is not None:
        named = requests.keys(requests.submission_key(principal, request_id), len(expanded))
        if (before := await requests.stored_before(db, named, asked)) is not None:
            return before  # stored by a sending before: its outputs may exist by now, so not checked again
    concrete = await resolve_inputs(db, principal, expanded)
    await _validate(db, principal, concrete)
    if ids is not None and len(ids) != len(concrete):
        raise InvalidInput(f"{len(ids)} job ids given for {len(concrete)} jobs")
    ids = list(ids) if ids is not None else await jobs.allocate_ids(db, len(concrete), principal.vo)
    at = jobs.now()
    docs = [_job_document(job_id, job, principal, at) for job_id, job in zip(ids, concrete, strict=True)]
    if not named:
        await jobs.insert_jobs(db, docs)
        return ids
    for doc, key in zip(docs, named, strict=True):
        doc["request"], doc["request_digest"] = key, asked  # requests.REQUEST, REQUEST_DIGEST
    return await requests.insert_once(db, docs, asked)


async def _validate(db: AsyncDatabase[Document], principal: Principal, concrete: Sequence[JobDescription]) -> None:
    ses = await input_data.storage_elements(db)
    sites = {se.site for se in ses.values()}
    vo = (await registry(db)).get(principal.vo)
    if vo is not None and vo.sites:
        sites &= set(vo.sites)  # another VO's site answers like an unknown one
    usable = {name for name in ses if se_in_vo(principal, name)}  # another VO's SE answers like an unknown one
    unknown_ses = sorted({o.se for job in concrete for o in job.outputs} - usable)
    if unknown_ses:
        raise InvalidInput(f"unknown output SE(s): {', '.join(unknown_ses)}", details={"ses": unknown_ses})
    read_only = sorted({o.se for job in concrete for o in job.outputs if ses[o.se].kind != "disk"})
    if read_only:
        raise InvalidInput(f"outputs must go to disk SEs; these are tape: {', '.join(read_only)}")
    unknown_sites = sorted({s for job in concrete for s in job.requirements.sites} - sites)
    if unknown_sites:
        raise InvalidInput(f"unknown site(s): {', '.join(unknown_sites)}", details={"sites": unknown_sites})
    repeated = sorted(lfn for lfn, n in Counter(o.lfn for job in concrete for o in job.outputs).items() if n > 1)
    if repeated:
        raise InvalidInput(f"output LFNs repeat within the submission: {', '.join(repeated[:10])}",
                           details={"lfns": repeated[:100]})
    inputs = sorted({lfn for job in concrete for lfn in job.input_data})
    for lfn in inputs:
        check_lfn(lfn)
    # Inputs that do not exist pass here: the checker fails their jobs naming them.
    _, refused = await authorized_files(db, principal, inputs, READ)
    denied = {lfn: reason for lfn, reason in refused.items() if reason != "no such file"}
    if denied:
        shown = "; ".join(f"{lfn}: {reason}" for lfn, reason in sorted(denied.items())[:10])
        raise Forbidden(f"you may not read {len(denied)} input file(s): {shown}", details={"lfns": denied})
    await _check_outputs(db, principal, [o.lfn for job in concrete for o in job.outputs])


async def _check_outputs(db: AsyncDatabase[Document], principal: Principal, lfns: Sequence[str]) -> None:
    """Outputs must be new LFNs the owner may create (checked again when they are registered).
    The right to create comes first: only where the caller could create a file may it learn that
    one exists (else a hidden or another VO's file would answer 409, a missing one 403)."""
    for lfn in lfns:
        check_lfn(lfn)
    dirs = await fetch_directories(db, {a for lfn in lfns for a in ancestors(lfn)})
    denied = {lfn: reason for lfn in lfns if (reason := creation_denial(principal, lfn, dirs))}
    if denied:
        shown = "; ".join(f"{lfn}: {reason}" for lfn, reason in sorted(denied.items())[:10])
        raise Forbidden(f"you may not create {len(denied)} output file(s): {shown}", details={"lfns": denied})
    existing = sorted(await fetch_files(db, lfns, {"_id": 1}))
    if existing:
        raise Conflict(f"output LFN(s) exist already: {', '.join(existing[:10])}", details={"lfns": existing})


def _job_document(job_id: str, job: JobDescription, principal: Principal, at: dt.datetime) -> jobs.JobRecord:
    return {
        "_id": job_id,
        "name": job.name,
        "owner": principal.sub,
        "group": principal.primary_group,
        "groups": list(principal.groups),
        # The rights the job acts with when it registers outputs (delegated at submission).
        "scopes": sorted(principal.scopes),
        "vo": principal.vo,
        "description": job.model_dump(mode="json", exclude={"parameters"}),
        "priority": job.priority,
        "state": states.RECEIVED,
        "reason": "submitted",
        "history": [jobs.history_entry(states.RECEIVED, "submitted")],
        "submitted": at,
        "updated": at,
        "recheck_at": at,
        "attempt": 1,
        "reschedules": 0,
        "output_salt": output_salt(),
    }
