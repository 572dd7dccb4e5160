"""Claiming shared work documents under a lease: the one mechanism every shared queue uses
(transfer requests, rules, the job checker's batches).

A claimed document carries `lease_owner` and `lease_expires`; it is free when `lease_expires`
is null or past. Each step is one atomic update whose filter holds the guard (free, or held by
this owner), so any number of processes share a collection without transactions. Claiming many
and renewing many are one round trip per batch, not one per document.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypedDict

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from kernel.db import Document, database_errors, one_reply

OWNER = "lease_owner"
EXPIRES = "lease_expires"
# The fields of a document nobody holds.
FREE: Document = {OWNER: None, EXPIRES: None}


class Leased(TypedDict):
    """The lease fields of a claimable document (both null when nobody holds it)."""

    lease_owner: str | None
    lease_expires: dt.datetime | None


def now() -> dt.datetime:
    """The current time, to the millisecond the database keeps (claim_many reads back by it)."""
    at = dt.datetime.now(dt.UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def unheld(at: dt.datetime) -> Document:
    """The filter of documents no live lease holds at `at`."""
    return {"$or": [{EXPIRES: None}, {EXPIRES: {"$lt": at}}]}


def taken(owner: str, at: dt.datetime, lease_s: float) -> Document:
    """The fields of a document `owner` holds from `at` for lease_s seconds."""
    return {OWNER: owner, EXPIRES: at + dt.timedelta(seconds=lease_s)}


def _available(query: Document, at: dt.datetime) -> Document:
    if "$or" in query:
        return {"$and": [query, unheld(at)]}
    return {**query, **unheld(at)}


def _update(fields: Document, extra: Document | None) -> Document:
    update: Document = {**(extra or {})}
    update["$set"] = {**update.get("$set", {}), **fields}
    return update


async def claim_one(
    collection: AsyncCollection[Document], owner: str, query: Document, *, lease_s: float,
    sort: Sequence[tuple[str, int]], update: Document | None = None,
) -> Document | None:
    """Take the first free document matching query (in `sort` order) under a lease, applying
    `update` in the same atomic write; the document as it is now, or None."""
    at = now()
    with database_errors():
        return await collection.find_one_and_update(
            _available(query, at), _update(taken(owner, at, lease_s), update),
            sort=list(sort), return_document=ReturnDocument.AFTER)


async def claim_many(
    collection: AsyncCollection[Document], owner: str, query: Document, *, lease_s: float,
    sort: Sequence[tuple[str, int]], limit: int, update: Document | None = None, comment: str | None = None,
) -> list[Document]:
    """Take up to `limit` free documents matching query (as `claim_one` would, best first) in
    three round trips: read candidates without a lock, claim those still free in one update (the
    guard is re-checked per document, atomically, so one another process took meanwhile is
    skipped, never shared), read back those this call won (by owner and exact expiry).
    `comment`: the candidates' read's (`kernel.db.INDEX_ORDER` where its promises hold)."""
    at = now()
    available = _available(query, at)
    fields = taken(owner, at, lease_s)
    with database_errors():
        # Each read in one reply: the default first batch of 101 cost a getMore per claim of more.
        candidates = await collection.find(available, {"_id": 1}, comment=comment).sort(list(sort)).limit(limit) \
            .batch_size(one_reply(limit)).to_list()
        ids = [doc["_id"] for doc in candidates]
        if not ids:
            return []
        result = await collection.update_many({**available, "_id": {"$in": ids}} if "$and" not in available
                                              else {"$and": [available, {"_id": {"$in": ids}}]},
                                              _update(fields, update))
        if result.modified_count == 0:
            return []
        claimed = await collection.find({"_id": {"$in": ids}, **fields}).batch_size(one_reply(len(ids))).to_list()
    order = {doc_id: index for index, doc_id in enumerate(ids)}
    return sorted(claimed, key=lambda doc: order[doc["_id"]])


async def claim_in_turn(
    collection: AsyncCollection[Document], owner: str, queries: Sequence[Document], *, lease_s: float,
    sort: Sequence[tuple[str, int]], limit: int, update: Document | None = None, comment: str | None = None,
) -> list[Document]:
    """`claim_many` of each query in turn until `limit` are taken: the first query's documents
    first (several queries where one `$or` would hold no index's order)."""
    got: list[Document] = []
    for query in queries:
        got += await claim_many(collection, owner, query, lease_s=lease_s, sort=sort, limit=limit - len(got),
                                update=update, comment=comment)
        if len(got) >= limit:
            break
    return got


async def held(collection: AsyncCollection[Document], ids: Sequence[Any], owner: str, *,
               guard: Document | None = None) -> set[Any]:
    """Which of these documents `owner` holds."""
    with database_errors():
        cursor = collection.find({"_id": {"$in": list(ids)}, OWNER: owner, **(guard or {})}, {"_id": 1})
        return {doc["_id"] for doc in await cursor.to_list()}


async def renew(
    collection: AsyncCollection[Document], ids: Sequence[Any], owner: str, *, lease_s: float,
    guard: Document | None = None, set_fields: Document | None = None,
) -> set[Any]:
    """Extend every lease `owner` holds among ids in one update; returns the ids still held
    (the others were lost: their work must stop)."""
    if not ids:
        return set()
    at = now()
    with database_errors():
        result = await collection.update_many(
            {"_id": {"$in": list(ids)}, OWNER: owner, **(guard or {})},
            {"$set": {EXPIRES: at + dt.timedelta(seconds=lease_s), **(set_fields or {})}})
    if result.matched_count == len(ids):
        return set(ids)
    return await held(collection, ids, owner, guard=guard)


async def release(
    collection: AsyncCollection[Document], doc_id: Any, owner: str, *, guard: Document | None = None,
    update: Document | None = None,
) -> bool:
    """Give a held document back (free), applying `update` in the same write; False when
    `owner` no longer held it."""
    with database_errors():
        result = await collection.update_one({"_id": doc_id, OWNER: owner, **(guard or {})}, _update(FREE, update))
    return result.modified_count == 1
