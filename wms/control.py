"""Kill and reschedule: decisions shared by users' requests and the watchdog, and the settling
of attempts whose claimer stopped before moving the job (`settle_stale_claims`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import Document
from kernel.errors import Conflict
from wms import job_claims, job_reads, jobs, stage_requests, states, task_queues
from wms.unprocessable import UNQUEUED_CLAIM

# Who claims a waiting job's attempt besides the matcher (which claims it for a pilot, by its name).
KILL_CLAIM = "kill"
# How old a claim of a job still waiting must be to count as its claimer's stopping: a claim and
# the job's move that follows it are two writes, milliseconds apart.
CLAIM_SETTLE_S = 60.0
CLAIMS_PER_PASS = 1000
RESET_ON_RESCHEDULE = ("pilot", "site", "heartbeat_at", "matched_at", "started", "finished", "task_queue",
                       "enqueued", "kill_requested", "exit_code", "missing", "resolved_inputs", "sites")


async def kill(db: AsyncDatabase[Document], job: Document, reason: str) -> Document:
    """Stop a job wherever it is; returns what happened.

    A waiting job is killed by claiming its attempt, as a pilot would: if a pilot claimed it
    in the same instant, the job is flagged instead and whoever holds it (matcher, checker,
    pilot) ends it. A staging job's transfers are withdrawn (`wms.stage_requests`).
    """
    job_id = job["_id"]
    if job["state"] in states.FINAL:
        raise Conflict(f"job {job_id} is {job['state']} already")
    if (killed := await _kill_unheld(db, job, reason)) is not None:
        return killed
    flagged = await jobs.update_fields(db, job_id, {"state": {"$nin": list(states.FINAL)}},
                                       {"kill_requested": True, "kill_reason": reason})
    if not flagged:
        raise Conflict(f"job {job_id} finished before it could be killed")
    # A checker that stored the job waiting, or a watchdog that sent it back to the checker, after
    # the look above skips no flag it could not see: the job, unheld now, is killed here as such a
    # job is (else it waited for a pilot to end it, or the checker ran it again).
    now = await jobs.find_job(db, job_id)
    if now is not None and now["state"] not in states.FINAL and (
            killed := await _kill_unheld(db, now, reason)) is not None:
        return killed
    return {"id": job_id, "state": "kill_requested"}


async def _kill_unheld(db: AsyncDatabase[Document], job: Document, reason: str) -> Document | None:
    """Kill a job no pilot holds: a waiting one by claiming its attempt, a received, staging or
    stalled one by its move (no claim on it); None when it is held (or moved on meanwhile)."""
    job_id = job["_id"]
    if job["state"] == states.WAITING and await job_claims.claim_attempt(db, job_id, job["attempt"], KILL_CLAIM):
        return await _kill_claimed(db, job, reason)
    done = await jobs.transition(db, job_id, [states.RECEIVED, states.STAGING, states.STALLED], states.KILLED,
                                 reason, guard={claims.OWNER: None})
    if done is None:
        return None
    await stage_requests.withdraw_left(db, done)  # a staging job's copies are no longer needed
    return {"id": job_id, "state": states.KILLED}


async def _kill_claimed(db: AsyncDatabase[Document], job: Document, reason: str) -> Document:
    """Kill a waiting job whose attempt the kill has claimed, and take it out of its queue."""
    await jobs.set_state_claimed(db, job["_id"], states.KILLED, reason)
    if job.get("task_queue"):
        await task_queues.remove(db, job["task_queue"], task_queues.entry(job["_id"], job["attempt"]))
    return {"id": job["_id"], "state": states.KILLED}


async def reschedule(db: AsyncDatabase[Document], job: Document, reason: str, *,
                     from_states: Sequence[str] = states.RESCHEDULABLE, guard: Document | None = None) -> Document:
    """Send a stalled, failed or killed job back to the checker as a new attempt. `from_states`
    narrows what the job may be in now: the watchdog moves only a job still stalled, so a kill
    that landed since it declared the stall stays a kill (the attempt alone does not change);
    `guard`, what else must hold."""
    done = await jobs.transition(
        db, job["_id"], list(from_states), states.RECEIVED, reason,
        guard={"attempt": job["attempt"], **(guard or {})},
        set_fields={"recheck_at": jobs.now()},
        unset_fields=RESET_ON_RESCHEDULE,
        inc={"attempt": 1, "reschedules": 1},
    )
    if done is None:
        raise Conflict(f"job {job['_id']} is {job['state']}; only {', '.join(from_states)} jobs "
                       "can be rescheduled")
    return jobs.public_view(done)


async def declare_stalled(db: AsyncDatabase[Document], job: Document, max_reschedules: int, silent_s: float) -> str:
    """A job whose pilot went silent: stalled, then rescheduled (or failed after too many tries)."""
    stalled = await jobs.transition(
        db, job["_id"], list(states.AT_PILOT), states.STALLED,
        f"no heartbeat from pilot {job.get('pilot')} for {silent_s:.0f}s",
        guard={"attempt": job["attempt"], "heartbeat_at": job["heartbeat_at"]},
    )
    if stalled is None:
        return "alive"
    await task_queues.add_running(db, job["group"], -1)
    if stalled.get("kill_requested"):
        await jobs.transition(db, job["_id"], [states.STALLED], states.KILLED, "killed by request")
        return "killed"
    if int(stalled.get("reschedules", 0)) >= max_reschedules:
        await jobs.transition(db, job["_id"], [states.STALLED], states.FAILED,
                              f"stalled {int(stalled.get('reschedules', 0)) + 1} times; giving up")
        return "failed"
    try:
        # Not a job flagged for killing since the stall was declared (the reschedule would drop the flag).
        await reschedule(db, stalled, f"rescheduled after stalling (attempt {stalled['attempt']})",
                         from_states=[states.STALLED], guard={"kill_requested": {"$ne": True}})
    except Conflict:
        killed = await jobs.transition(db, job["_id"], [states.STALLED], states.KILLED, "killed by request",
                                       guard={"attempt": stalled["attempt"], "kill_requested": True})
        return "killed" if killed is not None else "moved on by a request meanwhile"
    return "rescheduled"


async def settle_stale_claims(db: AsyncDatabase[Document], now: dt.datetime) -> int:
    """Finish what claimers that stopped between claiming a waiting job's attempt and moving the
    job began (a process killed, the database gone between the two writes): such a job stayed
    waiting for good, which no pilot could take (its attempt was claimed), nor a kill end, nor a
    reschedule move. A kill's claim kills it, the watchdog's fails it, a match's gives the job a
    new attempt (its pilot never got it). The claims are read in the order they were made, from
    where the last pass stopped; how many jobs were settled."""
    since = await job_claims.claims_settled_until(db)
    found = await job_claims.claims_made(db, since, now - dt.timedelta(seconds=CLAIM_SETTLE_S), CLAIMS_PER_PASS)
    if not found:
        return 0
    claimers = {str(claim["_id"]): str(claim.get("by", "")) for claim in found}
    waiting = await job_reads.get_jobs(db, [claim.rpartition(":")[0] for claim in claimers], state=states.WAITING)
    settled = 0
    for job in waiting:
        by = claimers.get(task_queues.entry(job["_id"], job["attempt"]))
        if by is not None and await _settle(db, job, by):
            settled += 1
    await job_claims.set_claims_settled_until(db, found[-1]["at"])
    return settled


async def _settle(db: AsyncDatabase[Document], job: Document, by: str) -> bool:
    guard = {"attempt": job["attempt"]}
    if by == KILL_CLAIM or job.get("kill_requested"):
        done = await jobs.transition(db, job["_id"], [states.WAITING], states.KILLED,
                                     job.get("kill_reason") or "killed by request", guard=guard)
        if done is not None and job.get("task_queue"):
            await task_queues.remove(db, job["task_queue"], task_queues.entry(job["_id"], job["attempt"]))
    elif by == UNQUEUED_CLAIM:
        done = await jobs.transition(db, job["_id"], [states.WAITING], states.FAILED,
                                     "the job watchdog could not queue it", guard=guard)
    else:
        done = await jobs.transition(
            db, job["_id"], [states.WAITING], states.RECEIVED,
            f"its match to pilot {by} was cut short before the pilot got it; checking it again",
            guard=guard, set_fields={"recheck_at": jobs.now()}, unset_fields=RESET_ON_RESCHEDULE,
            inc={"attempt": 1})
    return done is not None
