"""The transfers a job in `staging` asked for (its tape-only inputs copied to disk), withdrawn
when the job leaves `staging` without them: killed, failed (one copy failed, or its check
raised), or placed without them (its inputs found on disk meanwhile). The job records their ids
(`transfer_requests`); each is withdrawn for the job alone (`transfers.shared_requests.cancel_as`):
one another job, a rule or a user also asked for goes on for them, and one nobody else asked for
is cancelled (a recall under way is stopped and its tape-cache pin released by the stager).

A job entering `staging` is flagged (`HELD`) in the same write; the flag is dropped once the job
has left staging and withdrawn, so a process stopped between the job's move and its withdrawal
leaves a flagged job that the job watchdog finds (`left_holding`) and withdraws.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import INDEX_ORDER, Document, database_errors
from transfers.shared_requests import cancel_as
from wms import jobs, states

HELD = "stage_requests_held"
# A job in these states may be checked (again) and ask for copies: the watchdog leaves it.
CHECKED = (states.RECEIVED, states.CHECKING, states.STAGING)


def requester_of(job_id: str) -> str:
    """The requester of the transfers a job asks for."""
    return f"job:{job_id}"


async def withdraw(db: AsyncDatabase[Document], job_id: str, request_ids: Iterable[str]) -> int:
    """Withdraw the job from these requests (those still open); how many it no longer has."""
    ids = sorted(set(request_ids))
    withdrawn = await cancel_as(db, {"_id": {"$in": ids}}, requester_of(job_id)) if ids else 0
    with database_errors():
        await db[jobs.JOBS].update_one({"_id": job_id, HELD: True, "state": {"$nin": list(CHECKED)}},
                                       {"$unset": {HELD: ""}})
    return withdrawn


async def withdraw_left(db: AsyncDatabase[Document], job: Document) -> int:
    """`withdraw` for a job (as stored after its move out of staging) from the requests it records."""
    return await withdraw(db, job["_id"], job.get("transfer_requests") or [])


async def left_holding(db: AsyncDatabase[Document], limit: int) -> list[Document]:
    """Jobs past checking still flagged: their withdrawal was cut short (index jobs_stage_requests_held,
    under INDEX_ORDER: the flag is `true` wherever it exists, and only staging jobs hold it)."""
    with database_errors():
        return await db[jobs.JOBS].find({HELD: True, "state": {"$nin": list(CHECKED)}},
                                        {"transfer_requests": 1, "state": 1},
                                        comment=INDEX_ORDER).limit(limit).to_list()
