"""Pilot documents (collection `pilots`): one per pilot the factory submits.

`{_id: pilot name, site, queue, backend, state, batch_id, submitted_at, log, jobs: [...],
exit_code, reason, factory, updated}`. The factory writes a pilot's document in state
`submitting` before it asks the batch system (the intent), then sets the batch id; a factory
that died between the two leaves `submitting` documents, which the next holder of the queue's
lease reconciles against the batch system by the pilot's name instead of submitting again.
The matcher adds each job a pilot takes to its document, and names the batch id on the job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, IndexSpec, database_errors, find_in_turn
from kernel.errors import NotFound
from wms.batch.interface import ACTIVE

PILOTS = "pilots"
SUBMITTING = "submitting"
STATES = (SUBMITTING, "waiting", "running", "done", "failed", "aborted", "lost")
INDEXES = [
    # the factory's per-queue view of the pilots not yet finished
    IndexSpec(PILOTS, [("site", 1), ("queue", 1), ("state", 1)], name="pilots_by_queue", index_order=True),
    IndexSpec(PILOTS, [("submitted_at", -1)], name="pilots_by_time"),
]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def record_intents(db: AsyncDatabase[Document], docs: Sequence[Document]) -> None:
    """Write the pilots about to be submitted (state `submitting`)."""
    at = now()
    with database_errors():
        await db[PILOTS].insert_many([{**d, "state": SUBMITTING, "jobs": [], "submitted_at": at, "updated": at}
                                      for d in docs])


async def set_submitted(db: AsyncDatabase[Document], name: str, batch_id: str) -> None:
    with database_errors():
        await db[PILOTS].update_one({"_id": name, "state": SUBMITTING},
                                    {"$set": {"batch_id": batch_id, "state": "waiting", "updated": now()}})


async def set_state(db: AsyncDatabase[Document], name: str, state: str, *, exit_code: int | None = None,
                    reason: str = "", extra: Document | None = None) -> None:
    """Move a pilot to a batch state (finished pilots stay as they are)."""
    fields: Document = {"state": state, "updated": now(), **(extra or {})}
    if exit_code is not None:
        fields["exit_code"] = exit_code
    if reason:
        fields["reason"] = reason
    with database_errors():
        await db[PILOTS].update_one({"_id": name, "state": {"$in": [SUBMITTING, *ACTIVE]}}, {"$set": fields})


async def mark_unknown(db: AsyncDatabase[Document], name: str, since: dt.datetime) -> None:
    with database_errors():
        await db[PILOTS].update_one({"_id": name, "unknown_since": None}, {"$set": {"unknown_since": since}})


async def active(db: AsyncDatabase[Document], site: str, queue: str) -> list[Document]:
    """The queue's pilots that are submitting, waiting or running: one read per state under
    INDEX_ORDER (`site`, `queue`, `state` strings; index pilots_by_queue), so that on the
    embedded database the factory's every cycle does not read the queue's history of ended pilots."""
    return await find_in_turn(db[PILOTS], ({"site": site, "queue": queue, "state": state}
                                           for state in (SUBMITTING, *ACTIVE)))


async def took_job(db: AsyncDatabase[Document], name: str, job_id: str) -> Document | None:
    """A pilot took a job: add it to its document (the pilot runs, whatever the batch system
    last said); the document, or None for a pilot started by hand."""
    with database_errors():
        return await db[PILOTS].find_one_and_update(
            {"_id": name}, {"$addToSet": {"jobs": job_id}, "$set": {"updated": now()}})


async def get_pilot(db: AsyncDatabase[Document], name: str) -> Document:
    with database_errors():
        doc = await db[PILOTS].find_one({"_id": name})
    if doc is None:
        raise NotFound(f"pilot {name!r} does not exist")
    return doc


async def list_pilots(db: AsyncDatabase[Document], *, site: str | None = None, state: str | None = None,
                      limit: int = 100) -> list[Document]:
    query: Document = {}
    if site:
        query["site"] = site
    if state:
        query["state"] = state
    with database_errors():
        return await db[PILOTS].find(query).sort("submitted_at", -1).limit(limit).to_list()


async def page_pilots(db: AsyncDatabase[Document], *, site: str | None = None, queue: str | None = None,
                      state: str | None = None, after: str | None = None, limit: int = 100) -> list[Document]:
    """One page of pilots, newest first, continuing after the pilot named `after` (keyset on
    submitted_at then name, index pilots_by_time), without their job lists; an unknown `after`
    is NotFound."""
    query: Document = {k: v for k, v in {"site": site, "queue": queue, "state": state}.items() if v}
    if after is not None:
        last = await get_pilot(db, after)
        query["$or"] = [{"submitted_at": {"$lt": last["submitted_at"]}},
                        {"submitted_at": last["submitted_at"], "_id": {"$lt": last["_id"]}}]
    with database_errors():
        cursor = db[PILOTS].find(query, {"jobs": 0}).sort([("submitted_at", -1), ("_id", -1)])
        return await cursor.limit(limit).to_list()


def public_view(doc: Document) -> dict[str, Any]:
    return {"name": doc["_id"], **{k: v for k, v in doc.items() if k not in ("_id", "unknown_since")}}
