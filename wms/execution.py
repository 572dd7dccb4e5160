"""What pilots report about the job they hold: start, heartbeats, outputs, the end.

Every report names the job's attempt and the pilot; a report from a pilot that no longer
holds that attempt (the job was declared stalled and rescheduled, or killed) is refused with
409, so a pilot that comes back from the dead cannot overwrite the new attempt's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import Conflict, InvalidInput
from wms import jobs, outputs, states, task_queues

FINISHED_BY_PILOT = (states.DONE, states.FAILED, states.KILLED)


def _holder(attempt: int, pilot: str) -> Document:
    return {"attempt": attempt, "pilot": pilot}


async def start(db: AsyncDatabase[Document], job_id: str, attempt: int, pilot: str) -> Document:
    """matched -> running; answers whether the job should be killed instead."""
    job = await jobs.transition(db, job_id, [states.MATCHED], states.RUNNING, f"running at {pilot}",
                                guard=_holder(attempt, pilot), set_fields={"started": jobs.now(),
                                                                           "heartbeat_at": jobs.now()})
    if job is None:
        raise Conflict(f"job {job_id} attempt {attempt} is not matched to pilot {pilot}")
    return {"kill": bool(job.get("kill_requested"))}


async def heartbeat(db: AsyncDatabase[Document], job_id: str, attempt: int, pilot: str) -> Document:
    """Record that the job is alive; answers whether it should be killed."""
    ok = await jobs.update_fields(db, job_id, {"state": {"$in": list(states.AT_PILOT)}, **_holder(attempt, pilot)},
                                  {"heartbeat_at": jobs.now()})
    if not ok:
        raise Conflict(f"job {job_id} attempt {attempt} is no longer held by pilot {pilot}; stop it")
    job = await jobs.get_job(db, job_id)
    return {"kill": bool(job.get("kill_requested"))}


async def finish(
    db: AsyncDatabase[Document], job_id: str, attempt: int, pilot: str, *, state: str, reason: str,
    exit_code: int | None, stdout: str, stderr: str,
) -> Document:
    """running -> done/failed/killed, with exit code and the tails of stdout and stderr."""
    if state not in FINISHED_BY_PILOT:
        raise InvalidInput(f"a pilot reports one of {', '.join(FINISHED_BY_PILOT)}, not {state!r}")
    job = await jobs.transition(
        db, job_id, list(states.AT_PILOT), state, reason, guard=_holder(attempt, pilot),
        set_fields={"exit_code": exit_code, "stdout": stdout, "stderr": stderr, "finished": jobs.now()},
    )
    if job is None:
        raise Conflict(f"job {job_id} attempt {attempt} is no longer held by pilot {pilot}")
    await task_queues.add_running(db, job["group"], -1)
    return jobs.public_view(job)


async def register_outputs(
    db: AsyncDatabase[Document], job_id: str, attempt: int, pilot: str, files: Sequence[dict[str, Any]]
) -> Document:
    """Register uploaded outputs with provenance; answers per LFN."""
    job = await jobs.get_job(db, job_id)
    if job["state"] != states.RUNNING or job.get("attempt") != attempt or job.get("pilot") != pilot:
        raise Conflict(f"job {job_id} attempt {attempt} is not running at pilot {pilot}")
    declared = {o["lfn"]: o for o in job["description"]["outputs"]}
    undeclared = {f["lfn"]: "not an output declared by the job" for f in files if f["lfn"] not in declared}
    items = [{**f, "se": declared[f["lfn"]]["se"]} for f in files if f["lfn"] in declared]
    result = await outputs.register_outputs(db, job, items, job["description"]["input_data"]) if items else {
        "successful": {}, "failed": {}}
    result["failed"].update(undeclared)
    return result
