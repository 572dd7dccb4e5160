"""Named leases in MongoDB (one holder at a time for work that is not a document of a queue,
e.g. "reaper:SE-NAME"), and the helpers that keep leases renewed while their work runs.

A holder that stalls (stopped, swapped out, a paused VM) may resume after its lease ran out and
a successor took its work over. A write that only a holder may make without a guard of its own in
the database (a count another document's state decides) calls `check_held()` just before: work
run by `while_held(..., lease_s=...)` then stops with `LeaseLost` unless its lease was renewed (or
taken) less than three quarters of a lease ago by this process's clock. A successor starts a
quarter of a lease later at the earliest, so such a write can only meet its successor's if it
takes that long between the check and the database.

A named lease is one document `{_id: name, lease_owner, lease_expires}` (the fields of
`kernel.claims`); taking or renewing it is one upsert whose filter matches only a free, expired
or own lease, so a held lease makes the upsert hit the unique `_id` and fail — no transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypedDict, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel.claims import EXPIRES, OWNER, now
from kernel.db import Document, database_errors
from kernel.lease_held import _HELD, _Held
from kernel.lease_held import LeaseLost as LeaseLost  # the lease's API, here as before
from kernel.lease_held import check_held as check_held

LEASES = "leases"


class NamedLease(TypedDict):
    """A document of `leases`: the lease `_id` (e.g. "reaper:SE") and its holder."""

    _id: str
    lease_owner: str
    lease_expires: dt.datetime

T = TypeVar("T")
log = logging.getLogger("cairn.lease")
# The part of a lease a holder counts on after a renewal, by its own clock: the rest covers the
# clocks of the holder and its successor disagreeing and the write in flight.
SURE_PART = 0.75


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


async def while_held(work: Coroutine[Any, Any, T], keep: Callable[[], Awaitable[bool]], *, every_s: float,
                     lease_s: float | None = None, since: float | None = None) -> tuple[bool, T | None]:
    """Run `work`, calling `keep()` (renew the lease) every `every_s` while it runs.

    Returns (True, result), or (False, None) once `keep()` says the lease was lost: the work is
    then cancelled, as if its holder had died. When `keep()` raises (the database is down) the
    work is cancelled too and the error propagates: the work stops with the lease.
    With `lease_s` (the lease's length; `since`: the time.monotonic() before it was taken, else
    now), the work's `check_held()` raises LeaseLost once the lease was not renewed for
    SURE_PART of it; work that stops so returns (False, None) too."""
    sent = time.monotonic() if since is None or lease_s is None else since
    held = _Held(float("inf") if lease_s is None else sent + SURE_PART * lease_s)
    context = contextvars.copy_context()
    context.run(_HELD.set, held)
    task = asyncio.get_running_loop().create_task(work, context=context)
    try:
        while True:
            # Every `every_s` from the last renewal sent (the first from the lease's taking), not
            # from its answer: a slow round trip (a loaded database) must not stretch the gap
            # past the sure part of the lease.
            done, _ = await asyncio.wait({task}, timeout=max(0.0, sent + every_s - time.monotonic()))
            if done:
                return _outcome(task)
            sent = time.monotonic()
            if not await keep():
                if task.done():
                    return _outcome(task)
                return False, None
            if lease_s is not None:
                held.until = sent + SURE_PART * lease_s
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _outcome(task: asyncio.Task[T]) -> tuple[bool, T | None]:
    try:
        return True, task.result()
    except LeaseLost as exc:
        log.warning("stopping work whose lease may have run out: %s", exc)
        return False, None


async def under_named_lease(db: AsyncDatabase[Document], name: str, owner: str, work: Coroutine[Any, Any, T], *,
                            lease_s: float) -> tuple[bool, T | None]:
    """Run `work` holding the named lease `name` (renewed every third of its length), then give
    it up; (False, None) without running it when someone else holds the lease, or once it was lost."""
    since = time.monotonic()
    try:
        acquired = await acquire(db, name, owner, lease_s=lease_s)
    except BaseException:  # cancelled, or the database away: `work` never starts
        work.close()
        raise
    if not acquired:
        work.close()
        return False, None
    try:
        return await while_held(work, lambda: acquire(db, name, owner, lease_s=lease_s), every_s=lease_s / 3,
                                lease_s=lease_s, since=since)
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
