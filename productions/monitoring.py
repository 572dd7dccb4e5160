"""Following the jobs of submitted tasks: a done job makes its task done and its files processed;
a failed job is counted (once per attempt) and rescheduled until the transformation's
`max_attempts`, then its task fails and its files become problematic. A stopped transformation
reschedules nothing (its start does; nor does a pass that read it before a stop or clean:
the attempt it made is cancelled): a job of it that ends killed is what the stop cancelled
(a kill the stop could only request, of a job a checker held), and gives its files back as the
stop does. An mc transformation whose
tasks were all made and all ended is completed, unless an extension raised its limit since that
was read (the completion is guarded by the limit and task count read), or a task pass reserved
numbers whose tasks it has not stored yet (`transformations.ALLOCATING`).
"""

from __future__ import annotations

import contextlib

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import Conflict, NotFound
from productions import request_tasks, stopping, task_submission, tasks, transformation_files, transformations
from wms import control, job_reads, jobs, states

BATCH = 500


async def _failed(db: AsyncDatabase[Document], doc: Document, task: Document, job: Document) -> None:
    if doc["state"] == "stopped" and job["state"] == states.KILLED:
        await stopping.release_task(db, doc, task["_id"], ["submitted"])
        return
    counted = await tasks.count_failure(db, task, int(job["attempt"])) or task
    if doc["state"] == "stopped":
        return  # counted; rescheduled once it is started again
    if int(counted["failures"]) < int(doc["spec"]["max_attempts"]):
        # Conflict: rescheduled already (or by someone else); the next pass sees the new attempt.
        with contextlib.suppress(Conflict):
            await control.reschedule(db, job, f"task {task['_id']}: retry {counted['failures']}")
            await _cancel_if_stopped_meanwhile(db, doc, task)
        return
    await transformation_files.finish_task_files(db, doc["_id"], task["_id"], "problematic", failed=True)
    await tasks.mark(db, [task["_id"]], ["submitted"], "failed",
                     f"job {job['_id']} failed {counted['failures']} time(s): {job.get('reason', '')}")


async def _cancel_if_stopped_meanwhile(db: AsyncDatabase[Document], doc: Document, task: Document) -> None:
    """A stop or clean that landed since the pass read the transformation found the job ended and
    left it: its new attempt is cancelled here as they cancel (a stop's gives the task's files back)."""
    if await task_submission.still_making(db, doc):
        return
    if await transformations.cleaned_or_gone(db, doc["_id"]):
        job = await jobs.find_job(db, task["job"])
        if job is not None:
            with contextlib.suppress(Conflict):
                await control.kill(db, job, "its transformation was cleaned")
        return
    await stopping.cancel_not_started(db, doc, [task])


async def follow_tasks(db: AsyncDatabase[Document], doc: Document) -> int:
    """One pass over the transformation's submitted tasks; returns how many changed."""
    changed = 0
    after = -1
    while True:
        open_tasks = await tasks.tasks_in(db, doc["_id"], ["submitted"], BATCH, after)
        if not open_tasks:
            break
        after = open_tasks[-1]["number"]
        if doc["spec"]["type"] in request_tasks.REQUEST_KIND:
            for task in open_tasks:
                changed += await request_tasks.follow_task(db, doc, task)
            continue
        found = {j["_id"]: j for j in await job_reads.get_jobs(db, [t["job"] for t in open_tasks])}
        for task in open_tasks:
            job = found.get(task["job"])
            if job is None:
                continue
            if job["state"] == states.DONE:
                await transformation_files.finish_task_files(db, doc["_id"], task["_id"], "processed")
                changed += await tasks.mark(db, [task["_id"]], ["submitted"], "done", "job done")
            elif job["state"] in (states.FAILED, states.KILLED):
                await _failed(db, doc, task, job)
                changed += 1
    await _maybe_complete(db, doc)
    return changed


async def _maybe_complete(db: AsyncDatabase[Document], doc: Document) -> None:
    if doc["spec"]["type"] != "mc" or doc["state"] != "active":
        return
    try:
        fresh = await transformations.get(db, doc["_id"])
    except NotFound:  # deleted since the pass began
        return
    if fresh["next_task"] < (fresh["spec"].get("max_tasks") or 0) or fresh.get(transformations.ALLOCATING):
        return  # (numbers reserved by a task pass whose tasks are not stored yet: they are still to run)
    if not await tasks.tasks_in(db, doc["_id"], list(tasks.OPEN), 1):
        # Guarded by the limit and count read: an extension landing after the read (it saw the
        # transformation active, so it does not reopen it) keeps it active for its new tasks; and
        # by no reservation noted since (a pass's tasks stored after the look above).
        read = {"spec.max_tasks": fresh["spec"].get("max_tasks"), "next_task": fresh["next_task"],
                transformations.ALLOCATING: None}
        await transformations.set_state(db, doc["_id"], ("active",), "completed", guard=read)
