"""Replica status changes of many concurrent tasks, sent to the catalogue together.

Each upload flips its replica `copying` -> `available` as soon as its own bytes are verified,
and must know whether that flip happened. Sending one call per file made small-file uploads
cost a catalogue round trip per file (see `bench/cairn_io.py`). Here
a change waits in a queue while a bulk call is in flight and goes in the next one (a group
commit): a lone change still costs one call at once, many concurrent ones cost a few calls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from catalogue.files import refusal

if TYPE_CHECKING:
    from catalogue.client import CatalogueClient

MAX_BATCH = 1000


class StatusBatches:
    """Queue `set_status` calls of concurrent tasks; each returns once its own change is made."""

    def __init__(self, client: CatalogueClient) -> None:
        self.client = client
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def set_status(self, lfn: str, se: str, status: str, *, expected: str | None = None) -> None:
        """Set the replica's status (only from `expected` when given); raises why it was refused."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(({"lfn": lfn, "se": se, "status": status, "expected": expected}, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        await done

    async def _send(self) -> None:
        while self._queue:
            batch: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
            later: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
            lfns: set[str] = set()
            for entry in self._queue:  # one change per LFN in a call; a second one waits for the next
                if len(batch) < MAX_BATCH and entry[0]["lfn"] not in lfns:
                    batch.append(entry)
                    lfns.add(entry[0]["lfn"])
                else:
                    later.append(entry)
            self._queue = later
            try:
                failed = dict((await self.client.set_replica_statuses([item for item, _ in batch]))["failed"])
            except asyncio.CancelledError:
                for _, done in batch:
                    done.cancel()
                raise
            except Exception as exc:  # the call itself failed (or answered nonsense): every change in it did
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for item, done in batch:
                if done.done():  # its task was cancelled meanwhile
                    continue
                reason = failed.get(item["lfn"])
                if reason is None:
                    done.set_result(None)
                else:
                    done.set_exception(refusal(item["lfn"], str(reason)))
