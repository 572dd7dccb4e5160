"""A job a daemon cannot process fails alone, saying why (DIRAC's optimizers fail such a job with
the error as its minor status; here the reason, which `cairn job show` prints): a job record
that no longer reads (an input LFN that no longer validates, a description missing a field) or
a fault of ours met on one job must not stop a checker or watchdog pass for every later job, nor
leave the job held for ever. A failed job may be rescheduled once the cause is mended.

The daemons run each job's work under `kernel.daemon.one_of_many`: a dependency down (the
database) is no job's fault and still stops the pass, so the daemon backs off.
"""

from __future__ import annotations

from typing import cast

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from wms import job_claims, jobs, states

# The claimer named on a waiting job's attempt that the watchdog failed (`wms.control.settle_stale_claims`).
UNQUEUED_CLAIM = "job-watchdog"


def reason(daemon: str, why: str) -> str:
    """The failed job's reason: which daemon could not process it, and its error."""
    return f"{daemon} could not process the job: {why}"[:2000]


async def fail_at_pilot(db: AsyncDatabase[Document], job: Document, why: str) -> None:
    """Fail a silent job (at a pilot, or stalled by the pass that raised) that the watchdog could
    not stall or reschedule, unless it was heard from meanwhile. Its group's running counter, if
    the pass left it off, is mended by the watchdog's `counter_recount.QuietMender`."""
    await jobs.transition(db, job["_id"], [*states.AT_PILOT, states.STALLED], states.FAILED, why,
                          guard={"heartbeat_at": job.get("heartbeat_at")})


async def fail_unqueued(db: AsyncDatabase[Document], job: Document, why: str) -> None:
    """Fail a waiting job the watchdog could not queue, by claiming its attempt as a kill does
    (`control.kill`): a pilot that took it meanwhile keeps it."""
    if await job_claims.claim_attempt(db, job["_id"], cast(int, job.get("attempt")), UNQUEUED_CLAIM):
        await jobs.set_state_claimed(db, job["_id"], states.FAILED, why)
