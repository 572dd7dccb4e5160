"""Named leases in MongoDB: one holder at a time for a piece of work that is not a request
(e.g. "reaper:SE-NAME"), taken over once its holder stops renewing it.

A lease is one document `{_id: name, owner, expires}`; taking or renewing it is one upsert
whose filter matches only a free, expired or own lease, so a held lease makes the upsert hit
the unique `_id` and fail — no transaction needed.
"""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel.db import Document, database_errors

LEASES = "leases"


async def acquire(db: AsyncDatabase[Document], name: str, owner: str, *, lease_s: float) -> bool:
    """Take or renew the lease `name` for owner; False while someone else holds it."""
    at = dt.datetime.now(dt.UTC)
    with database_errors():
        try:
            await db[LEASES].update_one(
                {"_id": name, "$or": [{"owner": owner}, {"expires": {"$lt": at}}]},
                {"$set": {"owner": owner, "expires": at + dt.timedelta(seconds=lease_s)}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
    return True


async def release(db: AsyncDatabase[Document], name: str, owner: str) -> None:
    """Give the lease up (only if owner holds it)."""
    with database_errors():
        await db[LEASES].delete_one({"_id": name, "owner": owner})
