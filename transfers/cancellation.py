"""Cancelling open requests, and asking for (and recording) the release of the pins of stage
requests, which the stager carries out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import INDEX_ORDER, Document, database_errors
from transfers.requests import OPEN_STATES, REQUESTS, now


async def cancel(db: AsyncDatabase[Document], query: dict[str, Any]) -> int:
    """Cancel open requests matching query (callers scope it to what the user may cancel).

    A request that asked a tape SE to bring its file online is also asked to be released: the
    stager drops its pin, or stops the staging if it has not finished (`releases_asked`).
    Those with no recall asked are cancelled first: a recall noted after that look (a request
    never goes back to none) is found by the second, which asks its release. In the other order
    a recall noted between the two looks left the request matched by neither, not cancelled."""
    at = now()
    cancelled = 0
    change = {"state": "cancelled", "modified": at, "finished": at, **claims.FREE}
    asked: list[dict[str, Any]] = [{"stage.request_id": {"$exists": True}}, {"recall.request_id": {"$exists": True}}]
    with database_errors():
        none_asked = {"stage.request_id": {"$exists": False}, "recall.request_id": {"$exists": False}}
        for recall, extra in ((none_asked, {}), ({"$or": asked}, {"release": "asked"})):
            result = await db[REQUESTS].update_many(
                {"$and": [query, {"state": {"$in": list(OPEN_STATES)}}, recall]},
                {"$set": {**change, **extra}, "$unset": {"active_key": ""}},
            )
            cancelled += result.modified_count
    return cancelled


async def ask_release(db: AsyncDatabase[Document], query: dict[str, Any]) -> int:
    """Ask for the pins of done stage requests matching query to be released (the stager does
    it); a request already released or asked is not counted again."""
    with database_errors():
        result = await db[REQUESTS].update_many(
            {**query, "kind": "stage", "state": "done", "release": {"$exists": False}},
            {"$set": {"release": "asked", "modified": now()}})
    return result.modified_count


async def releases_asked(db: AsyncDatabase[Document], limit: int, *,
                         skip_ses: Sequence[str] = ()) -> list[Document]:
    """Requests whose pin a user asked to release (but those on `skip_ses`, tape SEs found away):
    from `requests_release` under INDEX_ORDER (`release` is a string or absent), since the stager
    asks at every cycle, once a second when idle (a scan of a 100k-request history cost the
    embedded database 0.3 CPU-s each time)."""
    query: dict[str, Any] = {"release": "asked"}
    if skip_ses:
        query["stage.se"] = {"$nin": list(skip_ses)}
    with database_errors():
        return await db[REQUESTS].find(query, {"lfn": 1, "stage": 1, "recall": 1},
                                       comment=INDEX_ORDER).limit(limit).to_list()


async def released(db: AsyncDatabase[Document], request_id: str, outcome: str) -> None:
    """The stager has released the pin (outcome "released", or why it could not)."""
    with database_errors():
        await db[REQUESTS].update_one({"_id": request_id, "release": "asked"},
                                      {"$set": {"release": outcome, "released": now()}})
