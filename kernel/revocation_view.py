"""A server process's view of the token revocations, checked on every authenticated request.

Checking a token costs two dictionary lookups. The view is read again when a request finds it
older than REFRESH_S: one read at a time, of the entries changed since the last look, in the
background while the view is younger than STALE_S. A request that finds it older waits for that
read, and is answered 503 (Retry-After) if it fails: a token that may have been revoked is never
accepted on a view older than STALE_S. So a revocation made through any process refuses its
tokens in every process within STALE_S; in the process that made it, at once (`apply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.documents import Document
from kernel.errors import ServiceUnavailable, Unauthenticated
from kernel.revocations import REREAD_S, Revocation, from_document, now, read_changed, user_key

REFRESH_S = 1.0
STALE_S = 5.0
RETRY_S = 1.0  # after a failed read, none is started for this long (requests on a stale view get 503)
PRUNE_S = 300.0  # how often entries past their expiry leave the view

log = logging.getLogger("cairn.revocations")


class RevocationView:
    """The live revocations of one database, indexed by jti and by (issuer, user)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self._entries: dict[str, Revocation] = {}
        self._by_jti: dict[str, list[Revocation]] = {}
        self._by_subject: dict[tuple[str, str], list[Revocation]] = {}
        self._newest: dt.datetime | None = None  # the latest `changed` read (the database's clock)
        self._read_at = -math.inf  # time.monotonic() when the last read that succeeded began
        self._failed_at = -math.inf
        self._pruned_at = time.monotonic()
        self._reading: asyncio.Task[None] | None = None

    async def check(self, claims: Mapping[str, Any], vo: str) -> None:
        """Refuse (401) a verified token that an entry revokes; 503 while the view is too old to tell."""
        await self._fresh()
        jti = claims.get("jti")
        found = self._by_jti.get(jti, ()) if isinstance(jti, str) else ()
        subject = self._by_subject.get((str(claims.get("iss")), user_key(str(claims.get("sub")))), ())
        for entry in (*found, *subject):
            if entry.refuses(claims, vo) and entry.expires > now():
                raise Unauthenticated("token has been revoked")

    def apply(self, revocation: Revocation) -> None:
        """Take in an entry this process has just stored (or read)."""
        old = self._entries.get(revocation.id)
        new = revocation if old is None else old.stricter(revocation)
        if new == old:
            return
        self._entries[revocation.id] = new
        if new.kind == "jti":
            index: list[Revocation] = self._by_jti.setdefault(new.jti or "", [])
        else:
            index = self._by_subject.setdefault((new.iss or "", user_key(new.sub or "")), [])
        if old is not None:
            index.remove(old)
        index.append(new)

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading

    async def _fresh(self) -> None:
        started = time.monotonic()
        if started - self._read_at < REFRESH_S:
            return
        if self._reading is None and started - self._failed_at >= RETRY_S:
            self._reading = asyncio.create_task(self._read())
        if started - self._read_at < STALE_S:
            return  # good enough meanwhile: the read runs in the background
        if self._reading is not None:
            await asyncio.shield(self._reading)
        if time.monotonic() - self._read_at >= STALE_S:
            raise ServiceUnavailable("token revocations cannot be read (database unavailable), so no token "
                                     "can be checked; retry later", retry_after=math.ceil(RETRY_S + STALE_S))

    async def _read(self) -> None:
        began = time.monotonic()
        try:
            since = self._newest - dt.timedelta(seconds=REREAD_S) if self._newest is not None else None
            for doc in await read_changed(self.db, since):
                self.apply(from_document(doc))
                self._newest = max(self._newest or doc["changed"], doc["changed"])
            self._read_at = began
            if began - self._pruned_at >= PRUNE_S:
                self._prune()
        except Exception as exc:  # the database is down (or answered nonsense): requests tell callers
            self._failed_at = time.monotonic()
            log.warning("could not read token revocations: %s", exc)
        finally:
            self._reading = None

    def _prune(self) -> None:
        self._pruned_at = time.monotonic()
        past = [entry for entry in self._entries.values() if entry.expires <= now()]
        for entry in past:
            del self._entries[entry.id]
            key: Any = entry.jti if entry.kind == "jti" else (entry.iss or "", user_key(entry.sub or ""))
            index = self._by_jti if entry.kind == "jti" else self._by_subject
            index[key].remove(entry)
            if not index[key]:
                del index[key]
