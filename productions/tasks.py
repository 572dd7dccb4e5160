"""The `transformation_tasks` collection: one document per task, `_id` "TRANSFORMATION:NUMBER".

States: created (files chosen; `job` holds the job id reserved for it once submission began),
submitted (the job exists), done, failed (its attempts ran out: its files are problematic),
killed (the transformation was stopped before the job ran: its files are unused again; a task
killed with `files_released` false had its files' release cut short, finished by `start`).
`failures` counts the failed job attempts seen; `seen_attempt` the last one counted, so a monitor
that dies between counting and rescheduling never counts an attempt twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import INDEX_ORDER, Document, IndexSpec, bulk_write_chunked, database_errors

TASKS = "transformation_tasks"
STATES = ("created", "submitted", "done", "failed", "killed")
OPEN = ("created", "submitted")

INDEXES = [
    # tasks_in (submission, monitoring, API): one state at a time, in `_id` (so number) order
    IndexSpec(TASKS, [("transformation", 1), ("state", 1), ("_id", 1)], name="transformation_tasks_by_state_id",
              index_order=True),
    # read until 2026-12-04, sorted by number (in memory on the embedded database)
    IndexSpec(TASKS, [("transformation", 1), ("state", 1), ("number", 1)], name="transformation_tasks_by_state",
              retired=True),
]


def task_id(transformation_id: str, number: int) -> str:
    return f"{transformation_id}:{number:08d}"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def document(transformation_id: str, number: int, lfns: Sequence[str], env: dict[str, Any]) -> Document:
    at = now()
    return {"_id": task_id(transformation_id, number), "transformation": transformation_id, "number": number,
            "files": list(lfns), "file_count": len(lfns), "site": env.get("site"), "env": env, "state": "created",
            "job": None, "files_marked": False, "failures": 0,
            "seen_attempt": 0, "reason": "created", "created": at, "updated": at}


async def insert(db: AsyncDatabase[Document], docs: Sequence[Document]) -> None:
    """Store new tasks (their ids are fresh numbers, so an insert never meets an existing one)."""
    if docs:
        with database_errors():
            await db[TASKS].insert_many(list(docs), ordered=False)


async def tasks_in(db: AsyncDatabase[Document], transformation_id: str, states: Sequence[str], limit: int,
                   after: int = -1, **fields: Any) -> list[Document]:
    """Tasks in these states (and with these field values) numbered above `after`, by number, at
    most `limit`. One read per state of the index transformation_tasks_by_state_id under
    INDEX_ORDER (`transformation` and `state` strings, `fields` strings or booleans, `_id` the
    number zero-padded): on the embedded database a transformation's history of ended tasks is
    not read to find its open ones (every monitor and submission cycle asks)."""
    found: list[Document] = []
    for state in dict.fromkeys(states):
        with database_errors():
            found += await db[TASKS].find(
                {"transformation": transformation_id, "state": state, "_id": {"$gt": task_id(transformation_id, after)},
                 "number": {"$gt": after}, **fields}, comment=INDEX_ORDER).sort("_id", 1).limit(limit).to_list()
    found.sort(key=lambda task: task["number"])
    return found[:limit]


async def reserve_jobs(db: AsyncDatabase[Document], job_ids: dict[str, str]) -> None:
    """Record the job id each created task will be submitted as (before the job exists)."""
    ops = [UpdateOne({"_id": tid, "state": "created", "job": None}, {"$set": {"job": job, "updated": now()}})
           for tid, job in job_ids.items()]
    await bulk_write_chunked(db[TASKS], ops)


async def mark_files_marked(db: AsyncDatabase[Document], ids: Sequence[str]) -> None:
    """Flag tasks whose files were marked assigned (task creation need not look at them again)."""
    with database_errors():
        await db[TASKS].update_many({"_id": {"$in": list(ids)}}, {"$set": {"files_marked": True}})


async def mark_files_released(db: AsyncDatabase[Document], task_id: str) -> None:
    """Record that a killed task's files were given back (unused again)."""
    with database_errors():
        await db[TASKS].update_one({"_id": task_id}, {"$set": {"files_released": True}})


async def mark(db: AsyncDatabase[Document], ids: Sequence[str], from_states: Sequence[str], state: str,
               reason: str, **fields: Any) -> int:
    """Move tasks to `state` (only those still in `from_states`), in one write."""
    if not ids:
        return 0
    with database_errors():
        result = await db[TASKS].update_many(
            {"_id": {"$in": list(ids)}, "state": {"$in": list(from_states)}},
            {"$set": {"state": state, "reason": reason, "updated": now(), **fields}})
    return result.modified_count


async def count_failure(db: AsyncDatabase[Document], task: Document, attempt: int) -> Document | None:
    """Count job attempt `attempt` as failed, once; the task after it, or None if counted already."""
    with database_errors():
        return await db[TASKS].find_one_and_update(
            {"_id": task["_id"], "state": "submitted", "seen_attempt": {"$lt": attempt}},
            {"$inc": {"failures": 1}, "$set": {"seen_attempt": attempt, "updated": now()}},
            return_document=True)


async def count_by_state(db: AsyncDatabase[Document], transformation_id: str) -> dict[str, int]:
    with database_errors():
        rows = await (await db[TASKS].aggregate([{"$match": {"transformation": transformation_id}},
                                          {"$group": {"_id": "$state", "n": {"$sum": 1}}}])).to_list()
    counts = dict.fromkeys(STATES, 0)
    counts.update({r["_id"]: int(r["n"]) for r in rows})
    return counts


async def files_by_site(db: AsyncDatabase[Document], transformation_id: str) -> dict[str, int]:
    """How many input files the transformation's tasks took per site (tasks of the `share`
    plugin name theirs; killed ones gave their files back)."""
    with database_errors():
        rows = await (await db[TASKS].aggregate([
            {"$match": {"transformation": transformation_id, "state": {"$ne": "killed"}}},
            {"$group": {"_id": "$site", "n": {"$sum": "$file_count"}}}])).to_list()
    return {r["_id"]: int(r["n"]) for r in rows if r["_id"] is not None}


async def states_of(db: AsyncDatabase[Document], ids: Sequence[str]) -> dict[str, str]:
    """The state of each of these tasks that exists (by `_id`)."""
    with database_errors():
        found = await db[TASKS].find({"_id": {"$in": list(ids)}}, {"state": 1}).to_list()
    return {t["_id"]: t["state"] for t in found}


async def delete(db: AsyncDatabase[Document], ids: Sequence[str]) -> int:
    """Delete these tasks (a pass's own, made after its transformation was cleaned); how many."""
    with database_errors():
        return (await db[TASKS].delete_many({"_id": {"$in": list(ids)}})).deleted_count if ids else 0


async def delete_all(db: AsyncDatabase[Document], transformation_id: str) -> int:
    """Delete every one of a transformation's tasks (cleaning); how many."""
    with database_errors():
        return (await db[TASKS].delete_many({"transformation": transformation_id})).deleted_count


def public_view(doc: Document) -> dict[str, Any]:
    return {"id": doc["_id"], "number": doc["number"], "state": doc["state"], "job": doc.get("job"),
            "files": doc["files"], "failures": doc.get("failures", 0), "reason": doc.get("reason"),
            "env": doc.get("env", {}), "updated": doc["updated"]}
