"""Reads of many jobs: by ids, listed and paged, the watchdog's looks (waiting jobs never queued,
jobs at a pilot gone silent), and counts by state and VO."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import INDEX_ORDER, Document, count_by, database_errors, find_in_turn, iterate, read_by_ids
from kernel.errors import NotFound
from kernel.principal import DEFAULT_VO
from wms import states
from wms.jobs import JOBS, OPEN_STATES


async def get_jobs(db: AsyncDatabase[Document], job_ids: Sequence[str], *,
                   state: str | None = None) -> list[Document]:
    """The jobs among `job_ids` that exist (and are in `state`), by `_id` in slices (kernel.db.read_by_ids)."""
    flt = {"state": state} if state is not None else None
    return [doc async for doc in read_by_ids(db[JOBS], job_ids, flt=flt)]


def list_jobs(
    db: AsyncDatabase[Document], *, owner: str | None, state: str | None, limit: int, where: Document | None = None
) -> AsyncIterator[Document]:
    """Jobs newest first, optionally of one owner and one state, and matching `where` (e.g. the
    caller's VO) (index jobs_by_owner)."""
    query: Document = dict(where or {})
    if owner is not None:
        query["owner"] = owner
    if state is not None:
        query["state"] = state
    projection = {"stdout": 0, "stderr": 0, "history": 0}
    return iterate(db[JOBS].find(query, projection).sort([("submitted", -1), ("_id", -1)]).limit(limit))


async def page_jobs(db: AsyncDatabase[Document], *, owner: str | None, state: str | None, after: str | None,
                    limit: int, where: Document | None = None) -> list[Document]:
    """One page of `list_jobs`, continuing after the job `after` (keyset on submitted then id, so
    a page costs the same however deep it is); an `after` that is unknown or outside `where` (the
    caller's VO) is NotFound."""
    query: Document = {**(where or {}), **{k: v for k, v in {"owner": owner, "state": state}.items() if v is not None}}
    if after is not None:
        with database_errors():
            last = await db[JOBS].find_one({**(where or {}), "_id": after}, {"submitted": 1})
        if last is None:
            raise NotFound(f"job {after} does not exist")
        query["$or"] = [{"submitted": {"$lt": last["submitted"]}},
                        {"submitted": last["submitted"], "_id": {"$lt": last["_id"]}}]
    projection = {"stdout": 0, "stderr": 0, "history": 0}
    with database_errors():
        return await db[JOBS].find(query, projection).sort([("submitted", -1), ("_id", -1)]).limit(limit).to_list()


async def unqueued_waiting(db: AsyncDatabase[Document], older_than: dt.datetime, limit: int) -> list[Document]:
    """Waiting jobs a checker placed but did not get into a queue (it died in between). Read
    under INDEX_ORDER (`state` a string, `enqueued` a boolean): the watchdog asks every few
    seconds, and a scan of a 100k-job history cost the embedded database 0.6 CPU-s each time."""
    with database_errors():
        return await db[JOBS].find(
            {"state": states.WAITING, "enqueued": False, "updated": {"$lt": older_than}}, {"stdout": 0, "stderr": 0},
            comment=INDEX_ORDER).limit(limit).to_list()


async def silent_jobs(db: AsyncDatabase[Document], heard_before: dt.datetime, limit: int) -> list[Document]:
    """Jobs at a pilot whose last heartbeat is older than `heard_before`: one read of
    jobs_by_state_heartbeat per state under INDEX_ORDER (the watchdog asks every few seconds; one
    `$in` of the states scanned a 100k-job history for 0.6 database CPU-s each time)."""
    return await find_in_turn(db[JOBS], ({"state": state, "heartbeat_at": {"$lt": heard_before}}
                                         for state in states.AT_PILOT), {"stdout": 0, "stderr": 0}, limit=limit)


async def count_by_state(db: AsyncDatabase[Document], owner: str | None = None,
                         where: Document | None = None) -> dict[str, int]:
    """How many jobs are in each state (of one owner, or all; matching `where`, e.g. a VO);
    index jobs_by_owner for one owner."""
    match = {**({"owner": owner} if owner is not None else {}), **(where or {})}
    stages: list[Document] = [{"$match": match}] if match else []
    stages.append({"$group": {"_id": "$state", "n": {"$sum": 1}}})
    with database_errors():
        cursor = await db[JOBS].aggregate(stages)
        rows = await cursor.to_list()
    return {row["_id"]: row["n"] for row in rows}


async def count_by_vo_and_state(db: AsyncDatabase[Document]) -> list[Document]:
    """Jobs per VO and state, every VO's (for monitoring): `[{vo, state, n}]` (no `vo`: DEFAULT_VO)."""
    return await count_by(db[JOBS], ["state", "vo"], absent={"vo": DEFAULT_VO})


async def count_open_of_vo(db: AsyncDatabase[Document], vo: str, limit: int) -> int:
    """Jobs of VO `vo` that have not ended (done, failed or killed), at most `limit` counted: a VO
    is not deleted while it has some (`catalogue.vo_removal`)."""
    with database_errors():
        # Index: jobs_by_state_vo.
        return await db[JOBS].count_documents({"state": {"$in": OPEN_STATES}, "vo": vo}, limit=limit)
