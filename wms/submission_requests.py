"""Jobs submitted once however often their call is sent: the caller names its submission
(`request_id`, a key of its own choosing; the SDK names every call), and each job stored carries
the submission's key and its place in it (`request`, unique), so a second sending (the first
one's answer lost to a server restart or a broken connection, a script run again) finds the jobs
the first one stored instead of queueing them again. A job run twice costs its CPU twice and
meets its own outputs registered (as DIRAC's resubmitted jobs do).

The insert decides, job by job (a unique sparse index): of two sendings racing, or a sending
after one cut short halfway, each job is stored once, and every sending answers the same ids
(ids a sending allocated but did not use stay unused). The same key sent with other jobs is
refused (409).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue.authorization import vo_stamp
from kernel import request_ids
from kernel.db import Document, database_errors, find_by_values
from kernel.errors import Conflict
from kernel.principal import Principal
from kernel.request_ids import call_key
from wms.jobs import JOBS, JobRecord, insert_jobs

REQUEST = "request"  # on a job: "<submission key>:<its place in the submission>"
REQUEST_DIGEST = "request_digest"  # on a job: what its submission asked for (`digest`)
DUPLICATE_KEY = 11000


def submission_key(principal: Principal, request_id: str) -> str:
    """The key of the caller's submission named request_id (no other caller's can equal it)."""
    return call_key("job-submission", vo_stamp(principal), principal.sub, request_id)


def digest(descriptions: Sequence[Any]) -> str:
    """What a submission asked for (its descriptions as sent), to tell a key reused for others."""
    return request_ids.digest([d.model_dump(mode="json") for d in descriptions])


def keys(key: str, count: int) -> list[str]:
    return [f"{key}:{place}" for place in range(count)]


async def stored_before(db: AsyncDatabase[Document], wanted: list[str], asked: str) -> list[str] | None:
    """The ids of the jobs a sending before stored under the keys `wanted`, in order, if it
    stored all of them (None: none or only some, as a sending cut short leaves them); Conflict for
    a key its caller reused for other jobs."""
    found = {doc[REQUEST]: doc for doc in await find_by_values(db[JOBS], REQUEST, wanted,
                                                               {REQUEST: 1, REQUEST_DIGEST: 1})}
    if any(doc.get(REQUEST_DIGEST) != asked for doc in found.values()):
        raise Conflict("request id already used for a submission of other jobs; use a new request id")
    if len(found) < len(wanted):
        return None
    return [str(found[key]["_id"]) for key in wanted]


async def insert_once(db: AsyncDatabase[Document], docs: list[JobRecord], asked: str) -> list[str]:
    """Store the jobs of a named submission, each unless a sending before stored its place; answers
    the ids stored under their places, in order."""
    try:
        await insert_jobs(db, docs)
    except BulkWriteError as exc:
        if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
            raise
    wanted = [doc.get("request", "") for doc in docs]
    with database_errors():
        ids = await stored_before(db, wanted, asked)
    if ids is None:  # removed between the insert and the read: said, not guessed
        raise Conflict("jobs of this submission were removed while it was stored; use a new request id")
    return ids
