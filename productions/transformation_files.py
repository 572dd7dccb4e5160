"""The `transformation_files` collection: each input file of a transformation with its status
(unused, assigned, processed, problematic, removed), its task, its size and the metadata the
grouping and the job template need. `_id` is "TRANSFORMATION:LFN", so feeding a file twice (the
change feed is at-least-once; the initial query and the feed overlap) changes nothing: it is an
insert whose duplicates are skipped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from kernel.db import INDEX_ORDER, Document, IndexSpec, database_errors, find_in_turn, iterate, serves_index_order

FILES = "transformation_files"
DUPLICATE_KEY = 11000
STATUSES = ("unused", "assigned", "processed", "problematic", "removed")

INDEXES = [
    # unused_files (task creation, in group then LFN order), files_of (API), counts
    IndexSpec(FILES, [("transformation", 1), ("status", 1), ("group_value", 1), ("lfn", 1)],
              name="transformation_files_by_status", index_order=True),
    # files of a task (monitoring)
    IndexSpec(FILES, [("transformation", 1), ("task", 1)], name="transformation_files_by_task"),
]


def file_id(transformation_id: str, lfn: str) -> str:
    return f"{transformation_id}:{lfn}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def add_files(db: AsyncDatabase[Document], transformation_id: str, found: Sequence[Document],
                    group_key: str | None) -> int:
    """Add catalogue file records (`_id`, size, meta_effective) as unused, in one unordered
    insert: a file known already is a duplicate key, skipped, and keeps its status (inserts are
    far cheaper than upserts on the embedded database). Returns how many were new."""
    if not found:
        return 0
    at = _now()
    docs = [{"_id": file_id(transformation_id, doc["_id"]), "transformation": transformation_id, "lfn": doc["_id"],
             "status": "unused", "task": None, "size": int(doc.get("size") or 0),
             "meta": doc.get("meta_effective") or {},
             "group_value": (doc.get("meta_effective") or {}).get(group_key) if group_key else None,
             "failures": 0, "added": at, "updated": at} for doc in found]
    with database_errors():
        try:
            result = await db[FILES].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others:
                raise
            return int(exc.details.get("nInserted", 0))
    return len(result.inserted_ids)


async def unused_files(db: AsyncDatabase[Document], transformation_id: str, limit: int, *,
                       grouped: bool = True) -> AsyncIterator[Document]:
    """Unused files in group then LFN order (index: transformation_files_by_status). On the
    embedded database (Cairn's build) they are read under INDEX_ORDER, so the files the
    transformation has processed, and other transformations' files, are not read to find the next
    unused ones (every task creation cycle asks): not `grouped` (no group key: `group_value` null
    in every file), sorted by the index; `grouped`, the group values may be numbers, whose JSON
    text does not sort like them, so the `limit` first are kept here (`_first_by_value`), unless a
    value is one it cannot order (a document, an array), when the database sorts them all."""
    query = {"transformation": transformation_id, "status": "unused"}
    projection = {"lfn": 1, "size": 1, "meta": 1, "group_value": 1}
    if grouped and await serves_index_order(db):
        window = await _first_by_value(db, query, projection, limit)
        if window is not None:
            for doc in window:
                yield doc
            return
    cursor = db[FILES].find(query, projection, comment=None if grouped else INDEX_ORDER
                            ).sort([("group_value", 1), ("lfn", 1)]).limit(limit).batch_size(1000)
    async for doc in iterate(cursor):
        yield doc


async def _first_by_value(db: AsyncDatabase[Document], query: Document, projection: Document,
                          limit: int) -> list[Document] | None:
    """The `limit` first (0: all) of the query's files by (group value, LFN) as MongoDB sorts them,
    read under INDEX_ORDER in no order and kept at most 2 x limit at a time; None at a group value
    `value_order` cannot place."""
    best: list[tuple[tuple[Any, ...], str, Document]] = []
    files = iterate(db[FILES].find(query, projection, comment=INDEX_ORDER).batch_size(1000))
    async with contextlib.aclosing(files):
        async for doc in files:
            order = value_order(doc.get("group_value"))
            if order is None:
                return None
            best.append((order, doc["lfn"], doc))
            if limit and len(best) > 2 * limit:
                best = heapq.nsmallest(limit, best, key=lambda entry: entry[:2])
    best.sort(key=lambda entry: entry[:2])
    return [doc for *_, doc in best[:limit or None]]


def value_order(value: Any) -> tuple[Any, ...] | None:
    """A key that orders scalar values as MongoDB sorts them (null, numbers by value, strings by
    code point, booleans, dates); None for a value of another kind, or NaN (which the embedded
    database does not store anyway)."""
    if value is None:
        return (1,)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, int | float):
        return None if value != value else (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, dt.datetime):
        return (9, value)
    return None


async def assign(db: AsyncDatabase[Document], transformation_id: str, lfns: Iterable[str], task: str) -> int:
    """Mark the files assigned to `task`: only unused ones (or this task's already), in one write."""
    with database_errors():
        result = await db[FILES].update_many(
            {"_id": {"$in": [file_id(transformation_id, lfn) for lfn in lfns]},
             "$or": [{"status": "unused"}, {"status": "assigned", "task": task}]},
            {"$set": {"status": "assigned", "task": task, "updated": _now()}})
    return result.matched_count


async def finish_task_files(db: AsyncDatabase[Document], transformation_id: str, task: str, status: str,
                            *, failed: bool = False) -> int:
    """Set the status of every file assigned to `task` (processed, problematic, or unused again)."""
    update: Document = {"$set": {"status": status, "updated": _now(),
                                 **({"task": None} if status == "unused" else {})}}
    if failed:
        update["$inc"] = {"failures": 1}
    with database_errors():
        result = await db[FILES].update_many(
            {"transformation": transformation_id, "task": task, "status": "assigned"}, update)
    return result.modified_count


async def drop_unused(db: AsyncDatabase[Document], transformation_id: str, lfns: Sequence[str]) -> int:
    """Files that left the input (their metadata no longer matches, or they were removed): those
    still unused become removed; assigned or processed ones stay as they are. One write."""
    if not lfns:
        return 0
    with database_errors():
        result = await db[FILES].update_many(
            {"_id": {"$in": [file_id(transformation_id, lfn) for lfn in lfns]}, "status": "unused"},
            {"$set": {"status": "removed", "updated": _now()}})
    return result.modified_count


async def revive(db: AsyncDatabase[Document], transformation_id: str, lfns: Sequence[str]) -> int:
    """Removed files that match the input again become unused. One write."""
    with database_errors():
        result = await db[FILES].update_many(
            {"_id": {"$in": [file_id(transformation_id, lfn) for lfn in lfns]}, "status": "removed"},
            {"$set": {"status": "unused", "task": None, "updated": _now()}})
    return result.modified_count


async def unused_below(db: AsyncDatabase[Document], transformation_id: str, directory: str, after: str | None,
                       limit: int) -> list[str]:
    """LFNs of unused files below a directory, in LFN order after `after` (index:
    transformation_files_by_status, then the LFN range)."""
    prefix = directory.rstrip("/") + "/"
    lfn: Document = {"$gte": prefix, "$lt": prefix[:-1] + "0"}  # "0" sorts right after "/"
    if after is not None:
        lfn["$gt"] = after
    with database_errors():
        found = await db[FILES].find({"transformation": transformation_id, "status": "unused", "lfn": lfn},
                                     {"lfn": 1}).sort("lfn", 1).limit(limit).to_list()
    return [f["lfn"] for f in found]


async def files_of(db: AsyncDatabase[Document], transformation_id: str, status: str | None,
                   after: str | None, limit: int) -> list[Document]:
    flt: Document = {"transformation": transformation_id}
    if status is not None:
        flt["status"] = status
    if after is not None:
        flt["lfn"] = {"$gt": after}
    with database_errors():
        return await db[FILES].find(flt, {"meta": 0}).sort("lfn", 1).limit(limit).to_list()


async def any_in(db: AsyncDatabase[Document], transformation_id: str, statuses: Sequence[str]) -> bool:
    """Whether some file of the transformation has one of these statuses: one read per status
    that stops at the first file, under INDEX_ORDER (index transformation_files_by_status)."""
    return bool(await find_in_turn(db[FILES], ({"transformation": transformation_id, "status": status}
                                               for status in statuses), {"_id": 1}, limit=1))


async def count_by_status(db: AsyncDatabase[Document], transformation_id: str) -> dict[str, int]:
    """How many files are in each status (every status listed, 0 included)."""
    with database_errors():
        rows = await (await db[FILES].aggregate([{"$match": {"transformation": transformation_id}},
                                          {"$group": {"_id": "$status", "n": {"$sum": 1}}}])).to_list()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({r["_id"]: int(r["n"]) for r in rows})
    return counts


async def delete_all(db: AsyncDatabase[Document], transformation_id: str) -> int:
    """Delete every one of a transformation's per-file statuses (cleaning); how many."""
    with database_errors():
        return (await db[FILES].delete_many({"transformation": transformation_id})).deleted_count


def public_view(doc: Document) -> dict[str, Any]:
    return {"lfn": doc["lfn"], "status": doc["status"], "task": doc.get("task"), "failures": doc.get("failures", 0),
            "size": doc.get("size")}
