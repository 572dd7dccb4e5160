"""Registering a job's output files in the catalogue's `files` collection, with provenance.

Registration is keyed by the job: a file document records `produced_by: {job, attempt}` and
`ancestors` (the job's input LFNs). Registering the same LFN again from the same job (a
rescheduled attempt) updates that one document instead of adding another; an LFN that exists
and was not produced by this job is refused.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, database_errors
from wms.input_data import FILES

OUTPUT_MODE = 0o644
GUID_NAMESPACE = uuid.UUID("6f1e3c0a-8d5b-4a7e-9c2f-3b1d2e4f5a60")


def output_guid(job_id: str, lfn: str) -> str:
    """The same GUID for the same output of the same job, whichever attempt registers it."""
    return str(uuid.uuid5(GUID_NAMESPACE, f"{job_id}:{lfn}"))


async def register_output(
    db: AsyncDatabase[Document],
    *,
    job: Document,
    lfn: str,
    se: str,
    url: str,
    size: int,
    adler32: str,
    ancestors: Sequence[str],
) -> str:
    """Record one output; returns "registered" or "updated".

    Raises pymongo's DuplicateKeyError when the LFN exists and another producer made it.
    """
    at = dt.datetime.now(dt.UTC)
    replica = {"se": se, "url": url, "status": "available"}
    produced = {"job": job["_id"], "attempt": job["attempt"]}
    content: dict[str, Any] = {"size": size, "adler32": adler32, "replicas": [replica], "produced_by": produced,
                               "ancestors": list(ancestors), "modified": at, "status": "available"}
    with database_errors():
        result = await db[FILES].update_one({"_id": lfn, "produced_by.job": job["_id"]}, {"$set": content})
        if result.matched_count:
            return "updated"
        await db[FILES].insert_one({
            "_id": lfn, "guid": output_guid(job["_id"], lfn), "owner": job["owner"], "group": job["group"],
            "mode": OUTPUT_MODE, "created": at, "metadata": {}, **content,
        })
    return "registered"

