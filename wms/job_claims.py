"""The claims of jobs' attempts (`job_claims`): inserting one takes a waiting job's attempt out of
the queue for good; the watchdog reads them in the order made, and records how far it has
settled them."""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel.db import INDEX_ORDER, Document, database_errors
from wms.jobs import CLAIMS, CLAIMS_SETTLED, COUNTERS, now


async def claim_attempt(db: AsyncDatabase[Document], job_id: str, attempt: int, by: str) -> bool:
    """Take a waiting job's attempt out of the queue for good; exactly one caller ever gets True.

    The unique `_id` makes the insert the guard, so neither the matcher nor a kill has to
    filter the jobs collection on its state (an `_id` lookup everywhere, fast on any backend).
    """
    try:
        with database_errors():
            await db[CLAIMS].insert_one({"_id": f"{job_id}:{attempt}", "by": by, "at": now()})
    except DuplicateKeyError:
        return False
    return True


async def claims_made(db: AsyncDatabase[Document], since: dt.datetime | None, before: dt.datetime,
                      limit: int) -> list[Document]:
    """Attempts' claims made from `since` (included: the last one read again is harmless) until
    `before`, oldest first (index job_claims_by_time, under INDEX_ORDER: `at` is a date in every claim)."""
    made: Document = {"$lte": before, **({"$gte": since} if since is not None else {})}
    with database_errors():
        return await db[CLAIMS].find({"at": made}, comment=INDEX_ORDER).sort("at", 1).limit(limit).to_list()


async def claims_settled_until(db: AsyncDatabase[Document]) -> dt.datetime | None:
    """When the claims the watchdog has looked at were made (None: it never looked)."""
    with database_errors():
        doc = await db[COUNTERS].find_one({"_id": CLAIMS_SETTLED})
    return None if doc is None else doc["at"]


async def set_claims_settled_until(db: AsyncDatabase[Document], at: dt.datetime) -> None:
    with database_errors():
        await db[COUNTERS].update_one({"_id": CLAIMS_SETTLED}, {"$set": {"at": at}}, upsert=True)
