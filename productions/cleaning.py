"""Cleaning a transformation (the `cleaned` state), as DIRAC's "clean transformation" does for
its bookkeeping, but deleting no data.

`clean` takes a stopped or completed transformation (or a cleaned one again: cleaning repeats
until done, so a cleaner that died half-way is finished by the next call). It kills the jobs of
its open tasks wherever they are and cancels their open transfer or deletion requests (a
cleaned transformation follows nothing, so nothing may go on in its name), then deletes its
tasks and per-file statuses, keeping their counts on the transformation (`cleaned_summary`).

What stays, because nobody asked to delete it: every file and replica its tasks registered
(outputs and their provenance), its input files, the jobs' and requests' own records (the job
layer's and the transfer queue's history, with their logs). DIRAC's cleaning agent also
removes a processing transformation's output directories; here that is a removal
transformation, or `cairn rm`, that a user asks for explicitly.

`delete` is stop (when running), clean, and the transformation's document deleted.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import Conflict
from productions import request_tasks, stopping, tasks, transformation_files, transformations
from wms import control, job_reads

CLEANABLE = ("stopped", "completed", "cleaned")
BATCH = 500


async def _end_open_tasks(db: AsyncDatabase[Document], doc: Document) -> int:
    """Kill the jobs (or cancel the requests) of the transformation's open tasks; how many."""
    ended = 0
    after = -1
    while batch := await tasks.tasks_in(db, doc["_id"], list(tasks.OPEN), BATCH, after):
        after = batch[-1]["number"]
        if doc["spec"]["type"] in request_tasks.REQUEST_KIND:
            for task in batch:
                ended += await request_tasks.cancel_task(db, doc, task)
            continue
        for job in await job_reads.get_jobs(db, [t["job"] for t in batch if t.get("job")]):
            with contextlib.suppress(Conflict):  # it ended already
                await control.kill(db, job, "its transformation was cleaned")
                ended += 1
    return ended


async def _cleaned(db: AsyncDatabase[Document], doc: Document) -> Document:
    """The transformation moved to `cleaned` with its counts kept. The counts are written only by
    the move out of stopped or completed: a second clean that read the transformation before the
    first moved it would else count what the first had deleted already and keep zeros instead."""
    if doc.get("cleaned_summary"):
        return doc
    summary = {"files": await transformation_files.count_by_status(db, doc["_id"]),
               "tasks": await tasks.count_by_state(db, doc["_id"])}
    unkept = ("cleaned",) if doc["state"] == "cleaned" else ("stopped", "completed")  # cleaned: before counts were kept
    cleaned = await transformations.set_state(db, doc["_id"], unkept, "cleaned", cleaned_summary=summary)
    if cleaned is None:
        cleaned = await transformations.get(db, doc["_id"])
        if cleaned["state"] != "cleaned" or not cleaned.get("cleaned_summary"):
            raise Conflict(f"transformation {doc['_id']} changed state while being cleaned; try again")
    return cleaned


async def clean(db: AsyncDatabase[Document], doc: Document) -> dict[str, Any]:
    """Clean the transformation (see the module docstring); what was ended and removed."""
    if doc["state"] not in CLEANABLE:
        raise Conflict(f"transformation {doc['_id']} is {doc['state']}: stop it before cleaning it")
    cleaned = await _cleaned(db, doc)
    summary = cleaned["cleaned_summary"]
    ended = await _end_open_tasks(db, cleaned)
    removed_tasks = await tasks.delete_all(db, doc["_id"])
    removed_files = await transformation_files.delete_all(db, doc["_id"])
    return {"id": doc["_id"], "state": "cleaned", "jobs_or_requests_ended": ended,
            "tasks_removed": removed_tasks, "file_statuses_removed": removed_files, "summary": summary}


async def delete(db: AsyncDatabase[Document], doc: Document) -> dict[str, Any]:
    """Delete a transformation: stopped if it runs (what has not started is cancelled), cleaned,
    then its document deleted. Deletes no data, as cleaning."""
    if doc["state"] in transformations.RUNNING:
        await stopping.stop(db, doc)
        doc = await transformations.get(db, doc["_id"])
    outcome = await clean(db, doc)
    await transformations.delete(db, doc["_id"])
    return {**outcome, "state": "deleted"}
