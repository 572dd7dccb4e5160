"""Reads of many requests: by query, by requester, their counts by state, and a VO's open ones."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, database_errors
from transfers.requests import OPEN_STATES, REQUESTS, STATES


async def list_requests(db: AsyncDatabase[Document], query: dict[str, Any], *, limit: int) -> list[Document]:
    """Requests matching query, newest first."""
    with database_errors():
        return await db[REQUESTS].find(query).sort("created", -1).limit(limit).to_list()


async def requests_for(db: AsyncDatabase[Document], requester: str) -> list[Document]:
    """Every request a requester made (e.g. "job:<id>"), oldest first."""
    with database_errors():
        # requests_by_requester
        return await db[REQUESTS].find({"requester": requester}).sort("created", 1).to_list()


async def progress(db: AsyncDatabase[Document], query: dict[str, Any]) -> dict[str, int]:
    """Counts by state of the requests matching query (a submission, a requester...)."""
    with database_errors():
        cursor = await db[REQUESTS].aggregate([{"$match": query}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}])
        rows = await cursor.to_list()
    counts = dict.fromkeys(STATES, 0)
    counts.update({row["_id"]: row["n"] for row in rows})
    counts["total"] = sum(counts[s] for s in STATES)
    return counts


async def count_open_of_vo(db: AsyncDatabase[Document], vo: str, limit: int) -> int:
    """Requests of VO `vo` still queued, staging or active, at most `limit` counted: a VO is not
    deleted while it has some (`catalogue.vo_removal`)."""
    with database_errors():
        # Index: requests_by_state_kind_dest_vo (its `state` prefix).
        return await db[REQUESTS].count_documents({"state": {"$in": list(OPEN_STATES)}, "vo": vo}, limit=limit)
