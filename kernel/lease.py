"""Named leases in MongoDB (one holder at a time for work that is not a document of a queue,
e.g. "reaper:SE-NAME"), and the helpers that keep leases renewed while their work runs.

A named lease is one document `{_id: name, lease_owner, lease_expires}` (the fields of
`kernel.claims`); taking or renewing it is one upsert whose filter matches only a free, expired
or own lease, so a held lease makes the upsert hit the unique `_id` and fail — no transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypedDict, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel.claims import EXPIRES, OWNER, now
from kernel.db import Document, database_errors

LEASES = "leases"


class NamedLease(TypedDict):
    """A document of `leases`: the lease `_id` (e.g. "reaper:SE") and its holder."""

    _id: str
    lease_owner: str
    lease_expires: dt.datetime

T = TypeVar("T")
log = logging.getLogger("cairn.lease")


async def acquire(db: AsyncDatabase[Document], name: str, owner: str, *, lease_s: float) -> bool:
    """Take or renew the lease `name` for owner; False while someone else holds it."""
    at = now()
    with database_errors():
        try:
            await db[LEASES].update_one(
                {"_id": name, "$or": [{OWNER: owner}, {EXPIRES: {"$lt": at}}]},
                {"$set": {OWNER: owner, EXPIRES: at + dt.timedelta(seconds=lease_s)}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
    return True


async def release(db: AsyncDatabase[Document], name: str, owner: str) -> None:
    """Give the lease up (only if owner holds it)."""
    with database_errors():
        await db[LEASES].delete_one({"_id": name, OWNER: owner})


async def while_held(work: Coroutine[Any, Any, T], keep: Callable[[], Awaitable[bool]], *,
                     every_s: float) -> tuple[bool, T | None]:
    """Run `work`, calling `keep()` (renew the lease) every `every_s` while it runs.

    Returns (True, result), or (False, None) once `keep()` says the lease was lost: the work is
    then cancelled, as if its holder had died. When `keep()` raises (the database is down) the
    work is cancelled too and the error propagates: the work stops with the lease."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                return True, task.result()
            if not await keep() and not task.done():
                return False, None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def under_named_lease(db: AsyncDatabase[Document], name: str, owner: str, work: Coroutine[Any, Any, T], *,
                            lease_s: float) -> tuple[bool, T | None]:
    """Run `work` holding the named lease `name` (renewed every third of its length), then give
    it up; (False, None) without running it when someone else holds the lease, or once it was lost."""
    if not await acquire(db, name, owner, lease_s=lease_s):
        work.close()
        return False, None
    try:
        return await while_held(work, lambda: acquire(db, name, owner, lease_s=lease_s), every_s=lease_s / 3)
    finally:
        await release(db, name, owner)


class LeaseKeeper:
    """Renews every lease a process holds, in one batched call every `every_s`, from its own
    task (a slow round trip in the holder's loop must not cost a lease), and calls `on_lost(id)`
    for each lease found lost (cancelled, or taken over after the holder stalled)."""

    def __init__(self, renew: Callable[[Sequence[str]], Awaitable[set[str]]], held: Callable[[], Sequence[str]],
                 on_lost: Callable[[str], None], *, every_s: float) -> None:
        self._renew, self._held, self._on_lost, self.every_s = renew, held, on_lost, every_s
        self._task: asyncio.Task[None] | None = None

    async def renew_now(self) -> set[str]:
        """Renew what is held now; returns the ids lost (after telling the holder)."""
        held = list(self._held())
        lost = set(held) - await self._renew(held)
        for doc_id in sorted(lost):
            self._on_lost(doc_id)
        return lost

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.renew_now()
            except Exception as exc:  # the database is down: keep trying; leases may run out
                log.warning("could not renew leases: %s", exc)

    def ensure_running(self) -> None:
        """Start the renewing task (again, if it ended)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
