"""The `transformations` collection: the stored standing orders and their guarded state changes.

A transformation document holds its spec (see `productions.spec`), its owner's identity (the
rights its tasks act with, delegated when it is created, as a job's are), its state and the
counter of its task numbers. States: new (its initial query has not finished), active, flushing
(the next task-creation pass also makes incomplete groups; each flush asked counts in `FLUSHES`,
so a pass ends only the flushes it saw: `end_flush`), stopped, completed (an mc
transformation whose tasks all ended), cleaned (its tasks and file statuses deleted, their
counts kept: `productions.cleaning`). Every change is one update guarded by state.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, TypedDict

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.find import open_query
from kernel.db import Document, IndexSpec, database_errors, increment, stamp_missing
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from kernel.principal import Principal
from productions.spec import TransformationSpec

TRANSFORMATIONS = "transformations"
MAX_TASK = 99_999_999  # the highest task number (`productions.tasks.task_id` pads eight digits)
STATES = ("new", "active", "flushing", "stopped", "completed", "cleaned")
# States in which the daemons work on a transformation.
RUNNING = ("new", "active", "flushing")
# States in which it may still make tasks (stopped: once started again); the others are final.
OPEN = ("new", "active", "flushing", "stopped")
# States in which it may be extended, and how often an extension reads it again when it changed meanwhile.
EXTENDABLE = ("new", "active", "flushing", "completed", "stopped")
EXTEND_TRIES = 20
REQUEST_TYPES = ("replication", "removal")  # their tasks are transfer-queue requests (`productions.request_tasks`)
FLUSHES = "flushes"  # how many flushes were asked (absent: none since it was made)
# How many task numbers, the last `next_task`'s, a pass reserved and has not stored tasks for yet.
ALLOCATING = "allocating"

INDEXES = [
    # running(): the daemons' pass over live transformations
    IndexSpec(TRANSFORMATIONS, [("state", 1)], name="transformations_by_state"),
    # list_transformations for one owner
    IndexSpec(TRANSFORMATIONS, [("owner", 1), ("created", -1)], name="transformations_by_owner"),
]


class Transformation(TypedDict, total=False):
    """A stored transformation."""

    _id: str
    name: str
    spec: dict[str, Any]
    owner: str
    vo: str
    groups: list[str]
    scopes: list[str]
    state: str
    next_task: int
    initial_after: str | None
    production: str | None
    cleaned_summary: dict[str, Any]
    created: dt.datetime
    updated: dt.datetime


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def document(spec: TransformationSpec, principal: Principal, production: str | None = None) -> Document:
    """A new transformation's document (not stored yet)."""
    at = now()
    return {
        "_id": uuid.uuid4().hex[:12], "name": spec.name, "spec": spec.model_dump(mode="json"),
        "owner": principal.sub, "vo": principal.vo, "groups": list(principal.groups),
        "scopes": sorted(principal.scopes), "state": "new", "next_task": 0, "initial_after": None,
        "production": production, "created": at, "updated": at,
    }


async def insert(db: AsyncDatabase[Document], docs: list[Document]) -> None:
    with database_errors():
        await db[TRANSFORMATIONS].insert_many(docs)


async def check_input(db: AsyncDatabase[Document], principal: Principal, spec: TransformationSpec) -> None:
    """The input query must parse and its scope be readable by the owner (400/403/404 now,
    not a transformation that silently never feeds)."""
    if spec.input_query is not None:
        results = await open_query(db, principal, spec.input_query, scope=spec.input_path, limit=1)
        await results.aclose()  # type: ignore[attr-defined]


def check_rights(principal: Principal, spec: TransformationSpec) -> None:
    """The jobs' group must be one of the owner's groups; a transformation that asks for
    transfers or deletions needs the right to ask for them directly (`transfers.write`)."""
    if spec.group is not None and spec.group not in principal.groups:
        raise InvalidInput(f"group {spec.group} is not one of yours ({', '.join(principal.groups)})")
    if spec.type in REQUEST_TYPES and not principal.has_scope("transfers.write"):
        raise Forbidden(f"a {spec.type} transformation asks for requests: it needs the transfers.write scope")


async def create(db: AsyncDatabase[Document], principal: Principal, spec: TransformationSpec) -> Document:
    """Check and store a new transformation (state new: the feeder runs its initial query)."""
    await check_input(db, principal, spec)
    check_rights(principal, spec)
    doc = document(spec, principal)
    await insert(db, [doc])
    return doc


def owner_principal(doc: Document) -> Principal:
    """The owner as the catalogue and the job layer see them when the transformation acts (the
    spec's `group` first: the jobs' group, whose share they run under)."""
    wanted = doc["spec"].get("group")
    groups = tuple(doc["groups"])
    if wanted in groups:
        groups = (wanted, *[g for g in groups if g != wanted])
    return Principal(sub=doc["owner"], vo=doc.get("vo", ""), groups=groups, scopes=frozenset(doc["scopes"]))


async def get(db: AsyncDatabase[Document], transformation_id: str) -> Document:
    with database_errors():
        doc = await db[TRANSFORMATIONS].find_one({"_id": transformation_id})
    if doc is None:
        raise NotFound(f"transformation {transformation_id} does not exist")
    return doc


async def cleaned_or_gone(db: AsyncDatabase[Document], transformation_id: str) -> bool:
    """Whether the transformation is cleaned, or deleted: a daemon's pass that read it before
    checks this after its writes, since the clean (`productions.cleaning`) ended and deleted what
    it found then, and what the pass wrote after is the pass's to undo."""
    with database_errors():
        doc = await db[TRANSFORMATIONS].find_one({"_id": transformation_id}, {"state": 1})
    return doc is None or doc["state"] == "cleaned"


async def list_transformations(db: AsyncDatabase[Document], owner: str | None, limit: int,
                               where: Document | None = None) -> list[Document]:
    """Newest first, of one owner or all, matching `where` (e.g. the caller's VO)."""
    flt = {**({} if owner is None else {"owner": owner}), **(where or {})}
    with database_errors():
        return await db[TRANSFORMATIONS].find(flt).sort("created", -1).limit(limit).to_list()


async def running(db: AsyncDatabase[Document], states: tuple[str, ...] = RUNNING) -> list[Document]:
    """Transformations in these states: what the daemons work on (index: transformations_by_state)."""
    with database_errors():
        return await db[TRANSFORMATIONS].find({"state": {"$in": list(states)}}).to_list()


async def set_state(db: AsyncDatabase[Document], transformation_id: str, from_states: tuple[str, ...],
                    state: str, *, guard: Document | None = None, inc: Document | None = None,
                    **fields: Any) -> Document | None:
    """Move to `state` if in one of `from_states` (and the fields of `guard` still hold their
    values), adding `inc` to its counters; the new document, or None."""
    with database_errors():
        return await db[TRANSFORMATIONS].find_one_and_update(
            {"_id": transformation_id, "state": {"$in": list(from_states)}, **(guard or {})},
            {"$set": {"state": state, "updated": now(), **fields}, **(increment(inc) if inc else {})},
            return_document=ReturnDocument.AFTER)


async def ask_flush(db: AsyncDatabase[Document], transformation_id: str,
                    from_states: tuple[str, ...]) -> Document | None:
    """Move to flushing from one of `from_states`, counting the flush asked (`FLUSHES`); the new
    document, or None."""
    return await set_state(db, transformation_id, from_states, "flushing", inc={FLUSHES: 1})


async def end_flush(db: AsyncDatabase[Document], doc: Document) -> Document | None:
    """Back to active from the flush that `doc` (read before a task pass) was in, unless another
    was asked since: that one's files may have come after the pass read its window."""
    return await set_state(db, doc["_id"], ("flushing",), "active", guard={FLUSHES: doc.get(FLUSHES)})


async def record_feed_error(db: AsyncDatabase[Document], transformation_id: str, message: str) -> None:
    """Keep why the change feed's last batch could not feed this transformation (its owner sees it)."""
    with database_errors():
        await db[TRANSFORMATIONS].update_one({"_id": transformation_id},
                                             {"$set": {"feed_error": {"at": now(), "message": message[:1000]}}})


async def change_state(db: AsyncDatabase[Document], doc: Document, from_states: tuple[str, ...],
                       state: str) -> Document:
    """A user's state change; Conflict when the transformation is not in a state it may leave."""
    changed = await set_state(db, doc["_id"], from_states, state)
    if changed is None:
        raise Conflict(f"transformation {doc['_id']} is {doc['state']}; it must be one of {', '.join(from_states)}")
    return changed


async def allocate_tasks(db: AsyncDatabase[Document], transformation_id: str, count: int) -> int:
    """Reserve `count` task numbers in one write; returns the first. Numbers stop at MAX_TASK
    (eight digits: a task's `_id` holds its number zero-padded, and `_id` order is number order).
    The reservation is noted (`ALLOCATING`) until `allocation_done`: a pass stopped before it
    stored its tasks leaves it to the next pass (`productions.task_creation`)."""
    with database_errors():
        doc = await db[TRANSFORMATIONS].find_one_and_update(
            {"_id": transformation_id, "next_task": {"$not": {"$gt": MAX_TASK - count}}},
            {**increment({"next_task": count}), "$set": {ALLOCATING: count}}, return_document=ReturnDocument.AFTER)
    if doc is None:
        await get(db, transformation_id)  # NotFound when it is gone
        raise Conflict(f"transformation {transformation_id} has made its {MAX_TASK:,} tasks: no more can be made")
    return int(doc["next_task"]) - count + 1


async def allocation_done(db: AsyncDatabase[Document], transformation_id: str, count: int, last: int) -> None:
    """The tasks of the `count` numbers up to `last` are stored: the reservation is no longer noted."""
    with database_errors():
        await db[TRANSFORMATIONS].update_one({"_id": transformation_id, ALLOCATING: count, "next_task": last},
                                             {"$unset": {ALLOCATING: ""}})


async def save_initial_progress(db: AsyncDatabase[Document], transformation_id: str, after: str) -> None:
    """Remember the last LFN the initial query fed (it resumes there after a crash)."""
    with database_errors():
        await db[TRANSFORMATIONS].update_one({"_id": transformation_id}, {"$set": {"initial_after": after}})


async def extend(db: AsyncDatabase[Document], doc: Document, tasks: int) -> Document:
    """Allow `tasks` more tasks (an mc transformation makes them; a finished one becomes active).
    The new limit is written only where the limit it was reckoned from still holds (and, with no
    limit, the count of tasks made), read again otherwise: two extensions at once each add theirs."""
    if tasks < 1:
        raise InvalidInput("extend by at least one task")
    for _ in range(EXTEND_TRIES):
        limit = doc["spec"].get("max_tasks")
        base = {"spec.max_tasks": limit} if limit is not None else {"spec.max_tasks": None,
                                                                     "next_task": doc["next_task"]}
        with database_errors():
            changed = await db[TRANSFORMATIONS].find_one_and_update(
                {"_id": doc["_id"], "state": {"$in": list(EXTENDABLE)}, **base},
                {"$set": {"spec.max_tasks": (limit if limit is not None else doc["next_task"]) + tasks,
                          "updated": now()}}, return_document=ReturnDocument.AFTER)
        if changed is not None:
            break
        doc = await get(db, doc["_id"])
        if doc["state"] not in EXTENDABLE:
            raise Conflict(f"transformation {doc['_id']} is {doc['state']}")
    else:
        raise Conflict(f"transformation {doc['_id']} changed {EXTEND_TRIES} times while being extended; try again")
    if changed["state"] == "completed":
        changed = await set_state(db, doc["_id"], ("completed",), "active") or changed
    return changed


async def delete(db: AsyncDatabase[Document], transformation_id: str) -> None:
    """Delete a transformation's document (after `productions.cleaning.clean`)."""
    with database_errors():
        await db[TRANSFORMATIONS].delete_one({"_id": transformation_id, "state": "cleaned"})


def public_view(doc: Document) -> dict[str, Any]:
    """What the API shows of a transformation."""
    return {"id": doc["_id"], "name": doc["name"], "owner": doc["owner"], "state": doc["state"],
            "type": doc["spec"]["type"], "spec": doc["spec"], "tasks_created": doc.get("next_task", 0),
            "production": doc.get("production"), "created": doc["created"], "updated": doc["updated"],
            **({"cleaned_summary": doc["cleaned_summary"]} if doc.get("cleaned_summary") else {}),
            **({"feed_error": doc["feed_error"]} if doc.get("feed_error") else {})}


async def adopt_unowned(db: AsyncDatabase[Document], vo: str) -> int:
    """Give the transformations stored before VOs were recorded (no `vo`) to VO `vo` (`cairn vo migrate`)."""
    return await stamp_missing(db[TRANSFORMATIONS], "vo", vo)


async def count_open_of_vo(db: AsyncDatabase[Document], vo: str, limit: int) -> int:
    """Transformations of VO `vo` not completed or cleaned (a stopped one may start again), at most
    `limit` counted: a VO is not deleted while it has some (`catalogue.vo_removal`)."""
    with database_errors():
        # Index: transformations_by_state.
        return await db[TRANSFORMATIONS].count_documents({"state": {"$in": list(OPEN)}, "vo": vo}, limit=limit)
