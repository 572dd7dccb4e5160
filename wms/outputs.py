"""Registering a job's output files in the catalogue, with provenance.

Each output gets a GUID derived from the job, the LFN and the job's secret `output_salt` (drawn
at submission, never shown), the same for every attempt. The
first registration goes through `catalogue.files.register_files` as the job's owner (so the
catalogue's path permissions and directory creation apply); then the record gets the job's
provenance: `ancestors` (the job's input LFNs) and `produced_by: {job, attempt}`. When a
later attempt of the same job registers the LFN again, the GUID shows the record is this
job's, and it is updated in place: one record per output, whatever the number of attempts.
An LFN that exists with another GUID, or another owner, belongs to someone else and is refused.
The salt keeps the GUID unguessable: from the job id (a counter) and the LFN alone, another user
could register a file under it first, and the job's output would then be refused (the GUID is
unique), or taken over in place when that file sat at the output's LFN.

Fencing by attempt: every attempt writes its outputs to its own URL (`attempt_url`: the SE's URL
for the LFN with the job and attempt as its variant, `catalogue.replica_urls.variant_url`), and
the attempt the server accepts has that URL registered as the replica URL. A pilot that was
stopped, declared stalled and resumed can thus only ever write bytes that nothing points to (its
upload slot and its registration are refused, 409), and the catalogue's size and checksum are
always those of the bytes at the registered URL. A record is never overwritten by an older attempt
than the one that wrote it.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files, register_files
from catalogue.provenance import record_production
from catalogue.replica_urls import se_url, variant_url
from catalogue.replicas import overwrite_files
from catalogue.storage_elements import StorageElement, fetch_storage_elements, get_storage_element, replica_url
from catalogue.vos import confine_owner
from kernel.db import Document
from kernel.errors import InvalidInput, NotFound
from kernel.principal import Principal

GUID_NAMESPACE = uuid.UUID("6f1e3c0a-8d5b-4a7e-9c2f-3b1d2e4f5a60")


def output_salt() -> str:
    """A job's secret part of its outputs' GUIDs (stored with the job at submission)."""
    return secrets.token_hex(16)


def output_guid(job_id: str, lfn: str, salt: str | None = None) -> str:
    """The same GUID for the same output of the same job, whichever attempt registers it (a job
    stored before salts were drawn has none: its GUIDs stay as they were)."""
    return str(uuid.uuid5(GUID_NAMESPACE, f"{job_id}:{lfn}" + (f":{salt}" if salt else "")))


def attempt_url(url: str, job_id: str, attempt: int) -> str:
    """The URL one attempt of a job writes an output to, used by no other attempt."""
    return variant_url(url, f"job-{job_id}-attempt-{attempt}")


async def output_destinations(db: AsyncDatabase[Document], job: Document) -> list[dict[str, Any]]:
    """Each declared output of the job's current attempt with the `url` it is written to (on its
    SE's preferred write protocol), or `url: None` and the `problem` when it cannot be written."""
    destinations = []
    for out in job["description"]["outputs"]:
        try:
            se = await get_storage_element(db, out["se"])
        except NotFound:
            destinations.append({**out, "url": None, "problem": f"SE {out['se']} no longer exists"})
            continue
        protocol = se.preferred_protocol("write")
        if protocol is None or not se.write_enabled:
            destinations.append({**out, "url": None, "problem": f"SE {se.name} is not writable"})
            continue
        url = attempt_url(replica_url(protocol, out["lfn"]), job["_id"], job["attempt"])
        destinations.append({**out, "url": url, "se_config": se.model_dump(mode="json")})
    return destinations


def owner_of(job: Document) -> Principal:
    """The job's owner as the catalogue should see them when outputs are registered: the
    identity, groups and scopes of the token that submitted the job."""
    groups = tuple(job.get("groups") or [job["group"]])
    groups = (job["group"], *[g for g in groups if g != job["group"]])
    scopes = frozenset(job.get("scopes") or ["catalogue.write"])
    return Principal(sub=job["owner"], vo=job.get("vo", ""), groups=groups, scopes=scopes)


def _outside_se(ses: Mapping[str, StorageElement], item: Mapping[str, Any]) -> str | None:
    """Why an output's URL is not its SE's URL for its LFN (None when it is)."""
    se = ses.get(item["se"])
    if se is None:
        return f"SE {item['se']} does not exist"
    try:
        se_url(se, item["lfn"], item["url"])
    except InvalidInput as exc:
        return exc.message
    return None


async def register_outputs(
    db: AsyncDatabase[Document], job: Document, items: Sequence[dict[str, Any]], ancestors: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Register `{lfn, se, url, size, adler32}` items of one job attempt; answers per LFN."""
    guids = {item["lfn"]: output_guid(job["_id"], item["lfn"], job.get("output_salt")) for item in items}
    existing = await fetch_files(db, list(guids), {"guid": 1, "owner": 1})
    successful: dict[str, str] = {}
    failed: dict[str, str] = {}
    new = []
    overwrite: dict[str, Document] = {}
    at = dt.datetime.now(dt.UTC)
    produced = {"job": job["_id"], "attempt": job["attempt"]}
    ses = await fetch_storage_elements(db, {item["se"] for item in items})
    for item in items:
        lfn = item["lfn"]
        stored = existing.get(lfn)
        if (refusal := _outside_se(ses, item)) is not None:
            failed[lfn] = refusal
        elif stored is None:
            new.append(item)
        elif stored.get("guid") != guids[lfn] or stored.get("owner") != job["owner"]:
            failed[lfn] = "the LFN exists already and was not produced by this job"
        else:
            replica = {"se": item["se"], "url": item["url"], "status": "available", "created": at, "modified": at}
            overwrite[lfn] = {"size": item["size"], "adler32": item["adler32"], "replicas": [replica],
                              "ancestors": list(ancestors), "produced_by": produced}
    if overwrite:
        not_newer = {"$or": [{"produced_by.attempt": {"$lte": job["attempt"]}}, {"produced_by": None}]}
        # Through the catalogue: the file's version is bumped and its usage follows the new content.
        guard = {lfn: {"guid": guids[lfn], "owner": job["owner"], **not_newer} for lfn in overwrite}
        updated = await overwrite_files(db, overwrite, guard=guard)
        successful.update(dict.fromkeys(updated, "updated"))
        failed.update({lfn: "a later attempt of the job registered this output, or the file changed meanwhile"
                       for lfn in overwrite if lfn not in updated})
    if new:
        metas = {o["lfn"]: o.get("meta") or {} for o in job["description"]["outputs"]}
        result = await register_files(db, await confine_owner(db, owner_of(job)), [
            {"lfn": i["lfn"], "size": i["size"], "adler32": i["adler32"], "guid": guids[i["lfn"]],
             "replicas": [{"se": i["se"], "url": i["url"]}], "meta": metas.get(i["lfn"], {})} for i in new])
        failed.update({lfn: str(reason) for lfn, reason in result["failed"].items()})
        registered = [lfn for lfn in result["successful"] if lfn not in failed]
        if registered:
            await record_production(db, registered, ancestors, produced)
            successful.update(dict.fromkeys(registered, "registered"))
    return {"successful": successful, "failed": failed}
