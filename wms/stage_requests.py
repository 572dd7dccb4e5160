"""The transfers a job in `staging` asked for (its tape-only inputs copied to disk), withdrawn
when the job leaves `staging` without them: killed, failed (one copy failed, or its check
raised), or placed without them (its inputs found on disk meanwhile). The job records their ids
(`transfer_requests`); each is withdrawn for the job alone (`transfers.shared_requests.cancel_as`):
one another job, a rule or a user also asked for goes on for them, and one nobody else asked for
is cancelled (a recall under way is stopped and its tape-cache pin released by the stager).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from transfers.shared_requests import cancel_as


def requester_of(job_id: str) -> str:
    """The requester of the transfers a job asks for."""
    return f"job:{job_id}"


async def withdraw(db: AsyncDatabase[Document], job_id: str, request_ids: Iterable[str]) -> int:
    """Withdraw the job from these requests (those still open); how many it no longer has."""
    ids = sorted(set(request_ids))
    if not ids:
        return 0
    return await cancel_as(db, {"_id": {"$in": ids}}, requester_of(job_id))


async def withdraw_left(db: AsyncDatabase[Document], job: Document) -> int:
    """`withdraw` for a job (as stored after its move out of staging) from the requests it records."""
    return await withdraw(db, job["_id"], job.get("transfer_requests") or [])
