"""What pilots report about the job they hold: start, heartbeats, outputs, the end.

Every report names the job's attempt and the pilot; a report from a pilot that no longer
holds that attempt (the job was declared stalled and rescheduled, or killed) is refused with
409, so a pilot that comes back from the dead cannot overwrite the new attempt's work. Outputs
are fenced the same way: a pilot asks for its upload slot (the URLs of its attempt, see
`outputs.attempt_url`) right before writing, and registers only those URLs.
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


async def _running_attempt(db: AsyncDatabase[Document], job_id: str, attempt: int, pilot: str) -> Document:
    """The job, if `pilot` runs its current `attempt`; else 409 (the attempt is stale)."""
    job = await jobs.get_job(db, job_id)
    if job["state"] != states.RUNNING or job.get("attempt") != attempt or job.get("pilot") != pilot:
        raise Conflict(f"job {job_id} attempt {attempt} is not running at pilot {pilot}")
    return job


async def output_slots(db: AsyncDatabase[Document], job_id: str, attempt: int, pilot: str) -> Document:
    """Where the running attempt writes its outputs (`{outputs: [{lfn, se, path, url}]}`), asked
    right before writing; 409 for an attempt that is no longer current."""
    job = await _running_attempt(db, job_id, attempt, pilot)
    return {"outputs": await outputs.output_destinations(db, job)}


async def register_outputs(
    db: AsyncDatabase[Document], job_id: str, attempt: int, pilot: str, files: Sequence[dict[str, Any]]
) -> Document:
    """Register uploaded outputs with provenance; answers per LFN. Only the URLs of this
    attempt's upload slot are accepted."""
    job = await _running_attempt(db, job_id, attempt, pilot)
    declared = {o["lfn"]: o for o in await outputs.output_destinations(db, job)}
    undeclared = {f["lfn"]: "not an output declared by the job" for f in files if f["lfn"] not in declared}
    undeclared.update({f["lfn"]: "not this attempt's output URL" for f in files
                       if f["lfn"] in declared and f["url"] != declared[f["lfn"]]["url"]})
    items = [{**f, "se": declared[f["lfn"]]["se"]} for f in files if f["lfn"] not in undeclared]
    result = await outputs.register_outputs(db, job, items, job["description"]["input_data"]) if items else {
        "successful": {}, "failed": {}}
    result["failed"].update(undeclared)
    return result
