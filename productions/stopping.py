"""Stopping a transformation: no new tasks; tasks not submitted yet, jobs not started yet and
open transfer or deletion requests are cancelled (their files unused again, so `start` resumes
them); running jobs finish and are followed. No data is deleted."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import Conflict
from productions import request_tasks, tasks, transformation_files, transformations
from wms import control, job_reads, states

NOT_STARTED = (states.RECEIVED, states.CHECKING, states.STAGING, states.WAITING)
BATCH = 500


async def _release(db: AsyncDatabase[Document], doc: Document, task_ids: list[str], from_states: list[str]) -> int:
    released = 0
    for task_id in task_ids:
        released += await release_task(db, doc, task_id, from_states)
    return released


async def release_task(db: AsyncDatabase[Document], doc: Document, task_id: str, from_states: list[str]) -> bool:
    """Kill a task still in `from_states` and give its files back (unused again); False when it
    had left them. The task is killed flagged `files_released: false` until its files are back,
    so a stop (or monitor) cut between the two writes leaves a task that `start` finishes: its
    files stayed assigned to a killed task, which no pass would look at again."""
    if not await tasks.mark(db, [task_id], from_states, "killed", "transformation stopped", files_released=False):
        return False
    await transformation_files.finish_task_files(db, doc["_id"], task_id, "unused")
    await tasks.mark_files_released(db, task_id)
    return True


async def _release_cut_short(db: AsyncDatabase[Document], doc: Document) -> int:
    """Give back the files of killed tasks whose release was cut short (`release_task`)."""
    released = 0
    while cut := await tasks.tasks_in(db, doc["_id"], ["killed"], BATCH, files_released=False):
        for task in cut:
            await transformation_files.finish_task_files(db, doc["_id"], task["_id"], "unused")
            await tasks.mark_files_released(db, task["_id"])
            released += 1
    return released


async def stop(db: AsyncDatabase[Document], doc: Document) -> dict[str, int]:
    """Stop the transformation and cancel what has not started; returns what was cancelled."""
    stopped = await transformations.change_state(db, doc, ("new", "active", "flushing"), "stopped")
    created = await tasks.tasks_in(db, doc["_id"], ["created"], 10**7)
    cancelled = await _release(db, stopped, [t["_id"] for t in created if t.get("job") is None], ["created"])
    jobs_killed, released = await cancel_all_not_started(db, stopped)
    return {"tasks_cancelled": cancelled + released, "jobs_killed": jobs_killed}


async def cancel_all_not_started(db: AsyncDatabase[Document], doc: Document) -> tuple[int, int]:
    """`cancel_not_started` for every created or submitted task of the transformation, a batch
    at a time: (jobs killed, tasks released)."""
    after, jobs_killed, released = -1, 0, 0
    while batch := await tasks.tasks_in(db, doc["_id"], ["created", "submitted"], BATCH, after):
        after = batch[-1]["number"]
        killed, freed = await cancel_not_started(db, doc, batch)
        jobs_killed += killed
        released += freed
    return jobs_killed, released


async def cancel_not_started(db: AsyncDatabase[Document], doc: Document, batch: list[Document]) -> tuple[int, int]:
    """Cancel what these tasks asked for that has not started: their open requests, or their jobs
    not started yet (those killed release their task). (jobs killed, tasks released)."""
    if doc["spec"]["type"] in request_tasks.REQUEST_KIND:
        released = 0
        for task in batch:
            if task["state"] == "submitted":
                await request_tasks.cancel_task(db, doc, task)
                released += await _release(db, doc, [task["_id"]], ["submitted"])
        return 0, released
    jobs_killed = released = 0
    found = await job_reads.get_jobs(db, [t["job"] for t in batch if t.get("job")])
    by_job = {t["job"]: t for t in batch}
    for job in found:
        if job["state"] not in NOT_STARTED:
            continue
        try:
            outcome = await control.kill(db, job, "its transformation was stopped")
        except Conflict:
            continue
        if outcome["state"] == states.KILLED:
            jobs_killed += 1
            released += await _release(db, doc, [by_job[job["_id"]]["_id"]], ["created", "submitted"])
    return jobs_killed, released


async def start(db: AsyncDatabase[Document], doc: Document) -> Document:
    """Resume a stopped transformation (the files of tasks its stop killed that are still
    assigned, their release cut short, are given back first)."""
    await _release_cut_short(db, doc)
    return await transformations.change_state(db, doc, ("stopped",), "active")


async def flush(db: AsyncDatabase[Document], doc: Document) -> Document:
    """Ask the next task-creation pass to make tasks of incomplete groups too."""
    flushing = await transformations.ask_flush(db, doc["_id"], ("active", "flushing"))
    if flushing is None:
        raise Conflict(f"transformation {doc['_id']} is {doc['state']}; it must be one of active, flushing")
    return flushing
