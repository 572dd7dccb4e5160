"""An upload's lease on the `copying` replicas it writes (`catalogue.upload_leases`): taken
right after registration, renewed in the background while the bytes move, and renewed again
before a replica is flipped or undone once LEASE_S / 4 has passed since the last renewal, so
that no other upload (which needs LEASE_S of silence to take a replica over) writes the same
bytes meanwhile. A replica the upload no longer holds is neither flipped nor undone by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable

from dataio.io_client import IOClient
from kernel.errors import CairnError

MAX_CALL = 10_000  # replicas per hold call (the server takes up to 100,000)


class UploadLease:
    """The leases of one upload call on one SE (one token for all its replicas)."""

    def __init__(self, client: IOClient, se: str) -> None:
        self.client, self.se = client, se
        self.writer = uuid.uuid4().hex
        self.lease_s = 600.0
        self._renewed: dict[str, float] = {}  # LFN held -> when the call that last renewed it was sent
        self._lock = asyncio.Lock()  # one hold call at a time: a release waits for one in flight
        self._task: asyncio.Task[None] | None = None

    async def take(self, lfns: list[str]) -> dict[str, str]:
        """Hold the replicas of lfns; answers why each one not held was refused."""
        async with self._lock:
            refused = await self._hold(lfns)
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

    async def ensure(self, lfns: Iterable[str]) -> dict[str, str]:
        """Make sure lfns are still held for the next LEASE_S * 3/4 (renewing those last renewed
        LEASE_S / 4 ago); answers why each one that is not held any more is lost."""
        async with self._lock:
            lfns = list(lfns)
            lost = {lfn: "this upload's lease on it ended" for lfn in lfns if lfn not in self._renewed}
            due = [lfn for lfn in lfns if lfn in self._renewed
                   and time.monotonic() - self._renewed[lfn] > self.lease_s / 4]
            return {**lost, **await self._hold(due)} if due else lost

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

    async def _hold(self, lfns: list[str]) -> dict[str, str]:
        refused: dict[str, str] = {}
        for start in range(0, len(lfns), MAX_CALL):
            chunk = lfns[start:start + MAX_CALL]
            sent = time.monotonic()
            result = await self.client.hold_replicas(self.writer, self.se, chunk)
            for lfn, answer in result["successful"].items():
                self._renewed[lfn] = sent
                self.lease_s = float(answer.get("lease_s", self.lease_s))
            for lfn, reason in result["failed"].items():
                self._renewed.pop(lfn, None)
                refused[lfn] = str(reason)
        return refused

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 4)
            with contextlib.suppress(CairnError, OSError):  # the catalogue away: tried again next period
                async with self._lock:
                    await self._hold(list(self._renewed))
