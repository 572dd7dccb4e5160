"""An upload's undo cut short (the process killed) at each of its steps leaves nothing a transfer
to that SE waits for longer than the upload lease (LEASE_S) counted from the upload's last
renewal: the lease's clock (`writer_at`) is not reset by the undo's `unavailable` nor by the
transfer's `copying` again."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

import catalogue.upload_leases
import dataio.upload_lease
from cairn.sdk import Client
from catalogue.storage_elements import StorageElement
from catalogue.writer_tokens import LEASE_S
from dataio.upload_items import PlannedFile
from dataio.upload_lease import UploadLease
from dataio.upload_undo import _claim, _unregister, discard
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.transfers import fast_settings
from transfers import queueing
from transfers import requests as rq
from transfers.endpoints import endpoints
from transfers.worker import TransferWorker

SIZE = 64 << 10
# The undo's writes, in order; a crash after the n-th leaves what the first n did.
CRASH_POINTS = ("registered", "claimed", "bytes_discarded", "replica_removed")


async def _undo_until(client: Client, se: StorageElement, lease: UploadLease, item: PlannedFile, point: str) -> None:
    """What `dataio.upload_undo.roll_back` has done when its process is killed at `point`."""
    steps = CRASH_POINTS.index(point)
    if steps >= 1:
        assert (await _claim(client, se, lease.writer, item))[0]
    if steps >= 2:
        await discard(client, endpoints(se, item.lfn, "write")[0], item.lfn)
    if steps >= 3:
        assert await _unregister(client, se, lease.writer, item) == ["registration undone"]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _killed_upload(api: RunningApi, admin: Client, live_ses: LiveSEs, se: StorageElement, lfn: str,
                         point: str) -> None:
    """An upload of lfn (on its source SE already) to se that wrote part of its bytes, failed,
    and was killed during its undo at `point`."""
    await admin.add_replicas([{"lfn": lfn, "se": se.name, "status": "copying"}])
    async with api.client() as client:
        lease = UploadLease(client, se.name)
        assert await lease.take([lfn]) == {}
        ep = endpoints(se, lfn, "write")[0]
        await client.plugin(ep.url, ep.options).write(ep.url, _chunks(os.urandom(SIZE // 2)))  # a partial copy
        await _undo_until(client, se, lease, PlannedFile(Path("/nonexistent"), lfn, SIZE), point)
        await lease.close()  # killed: no renewal from now on


async def test_a_transfer_after_an_undo_killed_at_any_step_waits_at_most_the_lease(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert LEASE_S <= 30  # it was 600 s
    lease_s = 10.0  # the catalogue's and the uploads' here: the test waits it out
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", lease_s)
    monkeypatch.setattr(dataio.upload_lease, "LEASE_S", lease_s)
    source, dest = await live_ses.add("file"), await live_ses.add("root")
    data: dict[str, bytes] = {}
    for point in CRASH_POINTS:
        lfn = f"/cta/undo/{point}"
        data[lfn] = os.urandom(SIZE)
        (tmp_path / point).write_bytes(data[lfn])
        [done] = await admin.upload([tmp_path / point], lfn, source.name)
        assert done.status == "uploaded", done.error
        await _killed_upload(api, admin, live_ses, dest, lfn, point)
    killed = time.monotonic()
    await asyncio.sleep(lease_s / 2)  # the transfer comes later: its first try does not restart the lease's clock
    submitted = await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": dest.name} for lfn in data],
                                                requester="t")
    worker = TransferWorker(fast_settings(api.settings, retry_base_s=0.5, retry_cap_s=0.5), database)
    running = asyncio.create_task(worker.run())
    ended: dict[str, float] = {}
    try:
        while len(ended) < len(data) and time.monotonic() - killed < 120:
            for lfn, request_id in submitted["successful"].items():
                request = await rq.get_request(database, request_id)
                if lfn not in ended and request is not None and request["state"] in rq.FINAL_STATES:
                    assert request["state"] == "done", request.get("last_error")
                    ended[lfn] = time.monotonic() - killed
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await running
    print({lfn.rsplit("/", 1)[1]: round(s, 1) for lfn, s in ended.items()})
    assert set(ended) == set(data), ended
    # Counted from the kill: a clock restarted by the transfer's first try would end past 1.5 leases.
    assert max(ended.values()) < lease_s + 3, ended
    for lfn, content in data.items():
        assert live_ses.stored_file(dest.name, lfn).read_bytes() == content
