"""Submitting created tasks as jobs through the job layer, in bulk, exactly once.

Each task first gets its job id recorded (`wms.jobs.allocate_ids`, then one bulk write), and
only then is the job stored with that id (`wms.submission.submit(ids=...)`). A submitter that
died in between leaves tasks whose job id is recorded: the next pass finds which of those jobs
exist (they are submitted) and submits the others with the same ids, so no task gets two jobs.
A task whose job the job layer refuses (an output that exists, an input gone), or whose
requests its owner may not make (`request_tasks`), fails with the reason and its files become
problematic.
"""

from __future__ import annotations

import contextlib
import logging

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.vos import confine_owner
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from kernel.principal import DEFAULT_VO
from productions import request_tasks, stopping, tasks, transformation_files, transformations
from productions.spec import render
from wms import control, job_reads, jobs, submission
from wms.description import JobDescription

BATCH = 200
MAKING = ("active", "flushing")
REFUSALS = (InvalidInput, Conflict, Forbidden, NotFound)
log = logging.getLogger("cairn.productions")


def _description(doc: Document, task: Document) -> JobDescription:
    template = {"priority": doc["spec"]["priority"], **doc["spec"]["job"]}
    template.setdefault("name", f"{doc['name']}-%(task)s")
    if task["env"].get("site") is not None:  # the share plugin chose the site (where the inputs are)
        template["requirements"] = {**(template.get("requirements") or {}), "sites": [task["env"]["site"]]}
    return render(template, task["env"], task_inputs=task["files"])


async def _fail(db: AsyncDatabase[Document], doc: Document, task: Document, reason: str) -> None:
    log.warning("transformation %s task %s refused: %s", doc["_id"], task["_id"], reason)
    await transformation_files.finish_task_files(db, doc["_id"], task["_id"], "problematic", failed=True)
    await tasks.mark(db, [task["_id"]], ["created"], "failed", reason)


async def _submit_requests(db: AsyncDatabase[Document], doc: Document, created: list[Document]) -> list[Document]:
    """Queue each task's requests; a task its owner may not ask for fails on its own."""
    queued = []
    for task in created:
        try:
            await request_tasks.submit_task(db, doc, task)
            queued.append(task)
        except REFUSALS as exc:
            await _fail(db, doc, task, f"the requests were refused: {exc}")
    return queued


async def still_making(db: AsyncDatabase[Document], doc: Document) -> bool:
    """Whether the transformation still makes tasks now: a daemon's pass reads the transformations
    when it begins, and one stopped (or deleted) since must not have tasks made or submitted."""
    try:
        return (await transformations.get(db, doc["_id"]))["state"] in MAKING
    except NotFound:
        return False


async def submit_tasks(db: AsyncDatabase[Document], doc: Document) -> int:
    """Submit up to BATCH created tasks as jobs (or requests); returns how many were submitted.
    A stop that lands while they are submitted is met after: what it could not see yet (jobs or
    requests stored after its look) is cancelled here, as the stop cancels; so is what this pass
    submitted for a task the stop released before the pass could mark it submitted. A clean or
    delete that landed meanwhile may have looked at the tasks before what this pass submitted
    existed, and deleted them: whatever this pass submitted is ended here, as the clean ends it."""
    if not await still_making(db, doc):
        return 0
    submitted = await _submit_tasks(db, doc)
    if submitted and not await still_making(db, doc):
        if await transformations.cleaned_or_gone(db, doc["_id"]):
            await _end_submitted(db, doc, submitted)
        else:
            await stopping.cancel_all_not_started(db, doc)
            await _end_submitted(db, doc, await _released_meanwhile(db, submitted))
    return len(submitted)


async def _released_meanwhile(db: AsyncDatabase[Document], submitted: list[Document]) -> list[Document]:
    """Those of the tasks this pass submitted that a stop released (killed: their files are unused
    again) before the pass could mark them submitted: their jobs or requests are no task's now."""
    now = await tasks.states_of(db, [t["_id"] for t in submitted])
    return [t for t in submitted if now.get(t["_id"], "killed") == "killed"]


async def _end_submitted(db: AsyncDatabase[Document], doc: Document, submitted: list[Document]) -> None:
    """Kill the jobs (or cancel the requests) of tasks this pass submitted (`cleaning` does it for
    the tasks it found)."""
    if doc["spec"]["type"] in request_tasks.REQUEST_KIND:
        for task in submitted:
            await request_tasks.cancel_task(db, doc, task)
        return
    for job in await job_reads.get_jobs(db, [t["job"] for t in submitted]):
        with contextlib.suppress(Conflict):  # it ended already
            await control.kill(db, job, "its transformation was stopped or cleaned")


async def _submit_tasks(db: AsyncDatabase[Document], doc: Document) -> list[Document]:
    """The tasks this pass submitted (or found submitted by a pass that died)."""
    created = await tasks.tasks_in(db, doc["_id"], ["created"], BATCH)
    if doc["spec"]["type"] in request_tasks.REQUEST_KIND:
        return await _submit_requests(db, doc, created)
    if not created:
        return []
    fresh = [t for t in created if t.get("job") is None]
    if fresh:
        ids = await jobs.allocate_ids(db, len(fresh), doc.get("vo") or DEFAULT_VO)
        reserved = dict(zip([t["_id"] for t in fresh], ids, strict=True))
        await tasks.reserve_jobs(db, reserved)
        created = await tasks.tasks_in(db, doc["_id"], ["created"], BATCH)
    existing = {j["_id"] for j in await job_reads.get_jobs(db, [t["job"] for t in created if t.get("job")])}
    already = [t for t in created if t.get("job") in existing]
    await tasks.mark(db, [t["_id"] for t in already], ["created"], "submitted", "submitted")
    pending: list[tuple[Document, JobDescription]] = []
    for task in created:
        if task.get("job") is None or task["job"] in existing:
            continue
        try:
            pending.append((task, _description(doc, task)))
        except (ValueError, ArithmeticError) as exc:  # from a file's metadata: this task's, no one else's
            await _fail(db, doc, task, f"the job template gives no valid job: {exc}")
    if not pending:
        return already
    principal = await confine_owner(db, transformations.owner_principal(doc))
    try:
        await submission.submit(db, principal, [d for _, d in pending], ids=[t["job"] for t, _ in pending])
        submitted = [t for t, _ in pending]
    except REFUSALS:
        submitted = []
        for task, description in pending:  # find which task the job layer refuses
            try:
                await submission.submit(db, principal, [description], ids=[task["job"]])
                submitted.append(task)
            except REFUSALS as exc:
                await _fail(db, doc, task, f"the job layer refused the job: {exc}")
    await tasks.mark(db, [t["_id"] for t in submitted], ["created"], "submitted", "submitted")
    return submitted + already
