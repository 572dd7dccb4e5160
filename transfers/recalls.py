"""Bring-online requests noted on the transfer requests they are asked for, before they are
asked (the stager's and the transfer worker's): one asked by a daemon that died before recording
it is found there, asked again under the same id by the next holder, or released on a cancel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel import claims
from kernel.db import Document, database_errors, read_by_ids
from transfers.requests import REQUESTS, now


async def cancelled_among(db: AsyncDatabase[Document], request_ids: list[str]) -> set[str]:
    """Those of the requests that are cancelled (read by `_id`)."""
    return {doc["_id"] async for doc in read_by_ids(db[REQUESTS], request_ids, {"_id": 1},
                                                    flt={"state": "cancelled"})}


async def note_recall(db: AsyncDatabase[Document], request_id: str, worker: str, state: str,
                      recall: Mapping[str, Any]) -> bool:
    """Note the bring-online request about to be asked for a held request (`recall`: its `se`,
    `url`, `path` and the `request_id` it is asked under), before it is asked: one that died
    between the ask and the request's end leaves it here, for the next holder to ask again
    under the same id (the tape system answers the recall it has) and for a cancel to release.
    False when the request is no longer held (nothing is to be asked then)."""
    with database_errors():
        result = await db[REQUESTS].update_one({"_id": request_id, claims.OWNER: worker, "state": state},
                                               {"$set": {"recall": dict(recall), "modified": now()}})
    return result.matched_count == 1
