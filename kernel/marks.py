"""A call's mark on documents it is about to delete and count, so that of several calls working
on the same documents at once (two users, a retry of a request that timed out, a daemon's second
instance) each document is counted by exactly one: a call marks those that carry no live mark,
reads back those that carry its own (what it reads is what it deletes and counts) and deletes
them by its mark. A mark older than its lease is a call's that died between marking and deleting:
the next call takes it over. A call past half its lease before its delete gives up (503) and
takes its marks off, so a call that took lapsed marks over never races a live deleter; only a
stall of more than half a lease between that check and the delete reaching the database could.
Used by `catalogue.file_removal` (file records), `catalogue.dataset_contents` (a DID's member
rows) and `rules.locks` (rule locks)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernel.db import READ_SLICE, Document, database_errors
from kernel.errors import ServiceUnavailable


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def within(at: Any, span: dt.timedelta) -> bool:
    """Whether now is less than `span` after `at` (a mark's time as read back: naive is UTC; not
    a time at all: False). A successor counting for a dead call does so only within the call's
    marks' lease less a margin (`catalogue.removal_counts`, `catalogue.move_counts`)."""
    if not isinstance(at, dt.datetime):
        return False
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return _now() < at + span


def by_ids(ids: Sequence[Any], *conditions: Document) -> Iterator[Document]:
    """The filters of `conditions` on the documents of ids, READ_SLICE `_id`s each (an `_id`
    index lookup on any database)."""
    for start in range(0, len(ids), READ_SLICE):
        yield {"$and": [{"_id": {"$in": list(ids[start:start + READ_SLICE])}}, *conditions]}


@dataclass
class Mark:
    """One call's mark: stored in `name` as {token, at}, valid for `lease`."""

    name: str
    lease: dt.timedelta
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: dt.datetime = field(default_factory=_now)

    def value(self) -> Document:
        return {"token": self.token, "at": self.at}

    def free(self) -> Document:
        """Documents no live call has marked: no mark, or one past its lease."""
        return {"$or": [{self.name: {"$exists": False}}, {f"{self.name}.at": {"$lt": self.at - self.lease}}]}

    def mine(self) -> Document:
        """Documents that carry this mark."""
        return {f"{self.name}.token": self.token}

    def holds(self, doc: Document) -> bool:
        return bool((doc.get(self.name) or {}).get("token") == self.token)

    async def delete(self, collection: Any, ids: Sequence[Any], what: str, where: Document | None = None) -> int:
        """Delete the documents of ids that carry this mark (and match `where`); how many. 503
        naming `what` when the call is past half its lease (another call may take its marks
        over): the caller takes its marks off and nothing was done."""
        if _now() - self.at > self.lease / 2:
            raise ServiceUnavailable(f"{what} took too long to reach its delete; nothing was done, try again")
        deleted = 0
        with database_errors():
            for flt in by_ids(ids, self.mine(), *([where] if where else [])):
                deleted += (await collection.delete_many(flt)).deleted_count
        return deleted

    async def renew(self, collection: Any, ids: Sequence[Any]) -> None:
        """Move this mark's time to now on the documents of ids that carry it (a long call keeps
        its marks from lapsing)."""
        at = _now()
        with database_errors():
            for flt in by_ids(ids, self.mine()):
                await collection.update_many(flt, {"$set": {f"{self.name}.at": at}})
        self.at = at

    async def take_off(self, collection: Any, ids: Sequence[Any]) -> None:
        """Take this mark off the documents of ids (the call failed before its delete): they are
        free at once. With the database down, nothing is done: the marks lapse with the lease."""
        with contextlib.suppress(ServiceUnavailable), database_errors():
            for flt in by_ids(ids, self.mine()):
                await collection.update_many(flt, {"$unset": {self.name: ""}})
