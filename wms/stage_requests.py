"""The transfers a job in `staging` asked for (its tape-only inputs copied to disk), withdrawn
when the job leaves `staging` without them: killed, failed (one copy failed, or its check
raised), or placed without them (its inputs found on disk meanwhile). The job records their ids
(`transfer_requests`), but they are withdrawn by the job's requester (`requester_of`, which every
request the job owns or joined carries), so those a checker asked for and never recorded (it
stopped between the ask and the record) are withdrawn too; each for the job alone
(`transfers.shared_requests.cancel_as`): one another job, a rule or a user also asked for goes on
for them, and one nobody else asked for is cancelled (a recall under way is stopped and its
tape-cache pin released by the stager).

A checker flags the job (`HELD`, `note_asking`) before it asks; the flag is dropped once the job
has left staging and withdrawn, so a process stopped between the ask and the record, or between
the job's move and its withdrawal, leaves a flagged job that its next move withdraws for, or the
job watchdog finds (`left_holding`).
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import INDEX_ORDER, Document, database_errors
from transfers.shared_requests import cancel_as
from wms import jobs, states

HELD = "stage_requests_held"
# A job in these states may be checked (again) and ask for copies: the watchdog leaves it.
CHECKED = (states.RECEIVED, states.CHECKING, states.STAGING)


def requester_of(job_id: str) -> str:
    """The requester of the transfers a job asks for."""
    return f"job:{job_id}"


async def note_asking(db: AsyncDatabase[Document], job_id: str, claim: str) -> bool:
    """Flag a job the checker pass `claim` holds before asking for its copies: whatever stops the
    pass after the ask, the job's next move out of checking withdraws them. False: the pass lost
    the job (it must not ask)."""
    with database_errors():
        result = await db[jobs.JOBS].update_one({"_id": job_id, claims.OWNER: claim}, {"$set": {HELD: True}})
    return result.matched_count == 1


async def withdraw(db: AsyncDatabase[Document], job_id: str) -> int:
    """Withdraw the job from the open requests it owns or joined (index requests_by_requester and
    requests_joined); how many it no longer has."""
    withdrawn = await cancel_as(db, {}, requester_of(job_id))
    with database_errors():
        await db[jobs.JOBS].update_one({"_id": job_id, HELD: True, "state": {"$nin": list(CHECKED)}},
                                       {"$unset": {HELD: ""}})
    return withdrawn


async def withdraw_left(db: AsyncDatabase[Document], job: Document) -> int:
    """`withdraw` for a job as stored after its move out of staging (or out of checking, flagged:
    a pass asked for copies it may not have recorded)."""
    if not job.get("transfer_requests") and not job.get(HELD):
        return 0  # it asked for nothing
    return await withdraw(db, job["_id"])


async def left_holding(db: AsyncDatabase[Document], limit: int) -> list[Document]:
    """Jobs past checking still flagged: their withdrawal was cut short (index jobs_stage_requests_held,
    under INDEX_ORDER: the flag is `true` wherever it exists, and only jobs a checker asked copies for hold it)."""
    with database_errors():
        return await db[jobs.JOBS].find({HELD: True, "state": {"$nin": list(CHECKED)}},
                                        {"transfer_requests": 1, "state": 1, HELD: 1},
                                        comment=INDEX_ORDER).limit(limit).to_list()
