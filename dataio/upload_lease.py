"""An upload's lease on the `copying` replicas it writes (`catalogue.upload_leases`): taken
right after registration and renewed in the background every LEASE_S / RENEWALS while the bytes
move, so that no other upload (which needs LEASE_S of silence to take a replica over) writes
the same bytes meanwhile.

The holder fences itself: a stream writes its next chunk only while its replica's last renewal
is younger than LEASE_S / 2 (else it renews first: the event loop was blocked, the catalogue
slow), and a renewal refused (taken over after this upload fell silent) cancels the store of
that replica at once (`writing`, raising LeaseLost). A replica the upload no longer holds is
neither flipped nor undone by it, and the flip and the undo's claim name this upload's writer,
so the catalogue refuses them on a replica another writer took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable

from catalogue.writer_tokens import FOUNDING, LEASE_S, RENEWALS
from dataio.io_client import IOClient
from kernel.errors import CairnError, Conflict

MAX_CALL = 10_000  # replicas per hold call (the server takes up to 100,000)


class LeaseLost(Conflict):
    """This upload no longer holds the replica it was writing (another writer took it over)."""

    code = "in_progress"


class UploadLease:
    """The leases of one upload call on one SE (one token for all its replicas)."""

    def __init__(self, client: IOClient, se: str) -> None:
        self.client, self.se = client, se
        self.writer = uuid.uuid4().hex
        self.lease_s = float(LEASE_S)  # the server's, once a hold call answered
        self._renewed: dict[str, float] = {}  # LFN held -> when the call that last renewed it was sent
        self._lost: dict[str, str] = {}  # LFN -> why this upload lost it
        self._writing: dict[str, asyncio.Task[object]] = {}  # LFN -> the task storing its bytes
        self._stopped: set[str] = set()  # LFNs whose store a loss cancelled
        self.founding: set[str] = set()  # LFNs taken whose record came with their replica (FOUNDING)
        self._lock = asyncio.Lock()  # one hold call at a time: a release waits for one in flight
        self._task: asyncio.Task[None] | None = None

    async def take(self, lfns: list[str]) -> dict[str, str]:
        """Hold the replicas of lfns; answers why each one not held was refused."""
        async with self._lock:
            refused = await self._hold(lfns, renew=False)
        self._keep_renewing()
        return refused

    def adopt(self, lfns: Iterable[str], sent: float) -> None:
        """Count as held the replicas of lfns that the registration sent at `sent` (its
        time.monotonic()) made with this upload's `writer`: they are held from then on."""
        for lfn in lfns:
            self._renewed[lfn] = sent
        self._keep_renewing()

    def _keep_renewing(self) -> None:
        if self._task is None and self._renewed:
            self._task = asyncio.ensure_future(self._renew_forever())

    async def ensure(self, lfns: Iterable[str], *, within: float | None = None) -> dict[str, str]:
        """Make sure lfns are still held for the next LEASE_S / 2 at least (renewing those last
        renewed more than `within`, by default LEASE_S / RENEWALS, ago); answers why each one
        that is not held any more is lost."""
        async with self._lock:
            lfns = list(lfns)
            limit = self.lease_s / RENEWALS if within is None else within
            lost = {lfn: self._lost.get(lfn, "this upload's lease on it ended") for lfn in lfns
                    if lfn not in self._renewed}
            due = [lfn for lfn in lfns if lfn in self._renewed and time.monotonic() - self._renewed[lfn] > limit]
            return {**lost, **await self._hold(due)} if due else lost

    async def fence(self, lfn: str) -> None:
        """Before more bytes of lfn are written: raise LeaseLost unless it is held, renewing it
        first if the background renewal is late (its last renewal older than LEASE_S / 2)."""
        sent = self._renewed.get(lfn)
        if sent is not None and time.monotonic() - sent <= self.lease_s / 2:
            return
        lost = await self.ensure([lfn], within=self.lease_s / 2)
        if lfn in lost:
            raise LeaseLost(f"{lfn} not sent to SE {self.se}: {lost[lfn]}")

    async def fenced(self, lfn: str, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The chunks of stream, each given only once `fence(lfn)` passed."""
        async for chunk in stream:
            await self.fence(lfn)
            yield chunk

    @contextlib.asynccontextmanager
    async def writing(self, lfn: str) -> AsyncIterator[None]:
        """Store lfn's bytes inside: a renewal refused meanwhile cancels the store, which then
        raises LeaseLost (nothing of it is undone: the replica is another writer's now)."""
        task = asyncio.current_task()
        assert task is not None
        self._writing[lfn] = task
        try:
            yield
        except asyncio.CancelledError:
            if lfn not in self._stopped or task.uncancel() > 0:  # not (only) the loss: Ctrl-C, another stop
                raise
            raise LeaseLost(f"{lfn} not sent to SE {self.se}: {self._lost[lfn]}") from None
        finally:
            self._writing.pop(lfn, None)
        await self.fence(lfn)

    async def release(self, lfns: Iterable[str]) -> None:
        """Stop renewing lfns (flipped or undone); a renewal in flight ends first."""
        async with self._lock:
            for lfn in lfns:
                self._renewed.pop(lfn, None)

    async def close(self) -> None:
        """Stop renewing (the upload call is over)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _hold(self, lfns: list[str], *, renew: bool = True) -> dict[str, str]:
        """Take (renew False) or renew the replicas of lfns: a renewal never takes back a replica
        another writer took over meanwhile (it may have written its bytes)."""
        refused: dict[str, str] = {}
        for start in range(0, len(lfns), MAX_CALL):
            chunk = lfns[start:start + MAX_CALL]
            sent = time.monotonic()
            result = await self.client.hold_replicas(self.writer, self.se, chunk, renew=renew)
            for lfn, answer in result["successful"].items():
                self._renewed[lfn] = sent
                if answer.get(FOUNDING):
                    self.founding.add(lfn)
                self.lease_s = float(answer.get("lease_s", self.lease_s))
            for lfn, reason in result["failed"].items():
                self._lose(lfn, str(reason))
                refused[lfn] = str(reason)
        return refused

    def _lose(self, lfn: str, reason: str) -> None:
        """lfn is not this upload's any more: stop writing its bytes now."""
        self._renewed.pop(lfn, None)
        self._lost[lfn] = reason
        task = self._writing.get(lfn)
        if task is not None and task is not asyncio.current_task() and lfn not in self._stopped:
            self._stopped.add(lfn)
            task.cancel()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / RENEWALS)
            with contextlib.suppress(CairnError, OSError):  # the catalogue away: tried again next period
                async with self._lock:
                    await self._hold(list(self._renewed))
