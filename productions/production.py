"""The `productions` collection: a named chain of transformations created from one spec
(`productions.production_spec`), with progress per step and a production-wide status, and the
driver that flushes a step once every step before it is quiet (so grouping by run makes its
last, incomplete groups when no more input can come)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import vo_stamp
from catalogue.metadata_fields import declared_fields
from kernel.db import Document, IndexSpec, database_errors, stamp_missing
from kernel.errors import Conflict, NotFound
from kernel.principal import Principal
from productions import cleaning, stopping, tasks, transformation_files, transformations
from productions.production_spec import ProductionSpec, check_chain

PRODUCTIONS = "productions"
INDEXES = [IndexSpec(PRODUCTIONS, [("owner", 1), ("created", -1)], name="productions_by_owner")]


async def create(db: AsyncDatabase[Document], principal: Principal, spec: ProductionSpec) -> Document:
    """Check the whole chain, then create its transformations and the production."""
    check_chain(spec, await declared_fields(db))
    for step in spec.steps:
        await transformations.check_input(db, principal, step)
        transformations.check_rights(principal, step)
    production_id = uuid.uuid4().hex[:12]
    docs = [transformations.document(step, principal, production_id) for step in spec.steps]
    await transformations.insert(db, docs)
    at = dt.datetime.now(dt.UTC)
    doc = {"_id": production_id, "name": spec.name, "owner": principal.sub, "vo": vo_stamp(principal),
           "steps": [d["_id"] for d in docs],
           "step_names": [s.name for s in spec.steps], "state": "active", "created": at, "updated": at}
    with database_errors():
        await db[PRODUCTIONS].insert_one(doc)
    return doc


async def get(db: AsyncDatabase[Document], production_id: str) -> Document:
    with database_errors():
        doc = await db[PRODUCTIONS].find_one({"_id": production_id})
    if doc is None:
        raise NotFound(f"production {production_id} does not exist")
    return doc


async def list_productions(db: AsyncDatabase[Document], owner: str | None, limit: int,
                           where: Document | None = None) -> list[Document]:
    """Newest first, of one owner or all, matching `where` (e.g. the caller's VO)."""
    flt = {**({} if owner is None else {"owner": owner}), **(where or {})}
    with database_errors():
        return await db[PRODUCTIONS].find(flt).sort(
            "created", -1).limit(limit).to_list()


async def _step_progress(db: AsyncDatabase[Document], transformation_id: str) -> dict[str, Any]:
    doc = await transformations.get(db, transformation_id)
    files = await transformation_files.count_by_status(db, transformation_id)
    counts = await tasks.count_by_state(db, transformation_id)
    quiet = (files["unused"] + files["assigned"] == 0 and counts["created"] + counts["submitted"] == 0
             and _settled(doc))
    return {"id": transformation_id, "name": doc["name"], "state": doc["state"], "files": files, "tasks": counts,
            "quiet": quiet}


def _settled(doc: Document) -> bool:
    """Past its initial query, and (mc) done making tasks."""
    return doc["state"] != "new" and (doc["spec"]["type"] != "mc" or doc["state"] in ("completed", "stopped"))


async def _quiet(db: AsyncDatabase[Document], transformation_id: str) -> bool:
    """`_step_progress`'s `quiet` by a few reads that stop at their first document (the monitor
    asks every cycle: counting every file and task of each step read them all)."""
    return (_settled(await transformations.get(db, transformation_id))
            and not await transformation_files.any_in(db, transformation_id, ("unused", "assigned"))
            and not await tasks.tasks_in(db, transformation_id, tasks.OPEN, 1))


async def status(db: AsyncDatabase[Document], doc: Document) -> dict[str, Any]:
    """Progress per step and the production's status: stopped, done (every step quiet), or running."""
    steps = [await _step_progress(db, tid) for tid in doc["steps"]]
    overall = "stopped" if doc["state"] == "stopped" else ("done" if all(s["quiet"] for s in steps) else "running")
    return {"id": doc["_id"], "name": doc["name"], "owner": doc["owner"], "status": overall, "steps": steps,
            "problematic": sum(s["files"]["problematic"] for s in steps)}


async def stop(db: AsyncDatabase[Document], doc: Document) -> dict[str, Any]:
    """Stop every step (cancelling what has not started; no data deleted)."""
    cancelled: dict[str, Any] = {}
    for tid in doc["steps"]:
        with contextlib.suppress(Conflict):
            cancelled[tid] = await stopping.stop(db, await transformations.get(db, tid))
    await _set_state(db, doc, "stopped")
    return {"id": doc["_id"], "state": "stopped", "cancelled": cancelled}


async def _set_state(db: AsyncDatabase[Document], doc: Document, state: str) -> None:
    with database_errors():
        await db[PRODUCTIONS].update_one({"_id": doc["_id"]}, {"$set": {"state": state,
                                                                         "updated": dt.datetime.now(dt.UTC)}})


async def start(db: AsyncDatabase[Document], doc: Document) -> dict[str, Any]:
    """Resume a stopped production: its stopped steps become active (completed ones stay)."""
    if doc["state"] != "stopped":
        raise Conflict(f"production {doc['_id']} is {doc['state']}; only a stopped one starts")
    started = []
    for tid in doc["steps"]:
        with contextlib.suppress(Conflict):  # a step that was not stopped (completed) stays as it is
            started.append((await stopping.start(db, await transformations.get(db, tid)))["_id"])
    await _set_state(db, doc, "active")
    return {"id": doc["_id"], "state": "active", "started": started}


async def _existing_steps(db: AsyncDatabase[Document], doc: Document) -> list[Document]:
    steps = []
    for tid in doc["steps"]:
        with contextlib.suppress(NotFound):  # deleted already by an earlier, interrupted delete
            steps.append(await transformations.get(db, tid))
    return steps


async def delete(db: AsyncDatabase[Document], doc: Document) -> dict[str, Any]:
    """Delete a production: each step stopped (what has not started is cancelled), cleaned
    (`productions.cleaning`: bookkeeping only, no data deleted) and deleted, then the
    production. Repeating it finishes an interrupted one."""
    await _set_state(db, doc, "stopped")
    cleaned: dict[str, Any] = {}
    for step in await _existing_steps(db, doc):
        cleaned[step["_id"]] = await cleaning.delete(db, step)
    with database_errors():
        await db[PRODUCTIONS].delete_one({"_id": doc["_id"]})
    return {"id": doc["_id"], "deleted": True, "steps": cleaned}


async def advance(db: AsyncDatabase[Document], step: Document) -> bool:
    """Flush an active step of a production once every step before it is quiet and it has
    unused files (its incomplete groups can grow no more); True when it was flushed."""
    if step.get("production") is None or step["state"] != "active":
        return False
    production = await get(db, step["production"])
    index = production["steps"].index(step["_id"])
    if index == 0 or not await transformation_files.any_in(db, step["_id"], ("unused",)):
        return False
    for before in production["steps"][:index]:
        if not await _quiet(db, before):
            return False
    return await transformations.ask_flush(db, step["_id"], ("active",)) is not None


def public_view(doc: Document) -> dict[str, Any]:
    return {"id": doc["_id"], "name": doc["name"], "owner": doc["owner"], "state": doc["state"],
            "steps": [{"id": t, "name": n} for t, n in zip(doc["steps"], doc["step_names"], strict=True)],
            "created": doc["created"]}


async def adopt_unowned(db: AsyncDatabase[Document], vo: str) -> int:
    """Give the productions stored before VOs were recorded (no `vo`) to VO `vo` (`cairn vo migrate`)."""
    return await stamp_missing(db[PRODUCTIONS], "vo", vo)
