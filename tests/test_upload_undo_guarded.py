"""An upload's undo removes only what is still its own, whenever it runs: one stalled past its
lease after claiming the replica (`unavailable`) leaves the replica and the bytes a transfer took
over meanwhile; one cut short between its writes never leaves a record it founded without
replicas (the replica and that record go in one call); a founded record another replica joined
stays with that replica; a finished upload's replica founds its record no more."""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

import catalogue.upload_leases
import dataio.upload
import dataio.upload_lease
from cairn.sdk import Client
from catalogue.storage_elements import StorageElement
from catalogue.upload_leases import hold_for_transfers
from dataio.upload_items import PlannedFile
from dataio.upload_lease import UploadLease
from dataio.upload_undo import roll_back
from kernel.db import Document
from kernel.errors import ServiceUnavailable
from storage_plugins.errors import StorageError
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.test_upload_concurrent_writers import ChangesTheFileWhenItStarts
from transfers import destination
from transfers.endpoints import endpoints

SIZE = 64 << 10
LEASE = 0.4  # the upload lease, shortened: a stall of the undo longer than it


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _write(client: Client, se: StorageElement, lfn: str, data: bytes) -> None:
    ep = endpoints(se, lfn, "write")[0]
    await client.plugin(ep.url, ep.options).write(ep.url, _chunks(data))


async def _take_over_and_copy(database: AsyncDatabase[Document], client: Client, se: StorageElement, lfn: str,
                              data: bytes) -> None:
    """What a transfer to se does with the `unavailable` replica an undo left: copying again, held
    once the upload's lease lapsed, the bytes copied, flipped `available`."""
    assert await destination.register_copying(database, lfn, se) == "copying"
    async with asyncio.timeout(10):  # held once the upload's lease lapsed
        while await hold_for_transfers(database, [(lfn, se.name)]):  # noqa: ASYNC110 (a catalogue write: no event)
            await asyncio.sleep(0.05)
    await _write(client, se, lfn, data)
    assert await destination.confirm(database, lfn, se.name)


async def test_an_undo_stalled_after_its_claim_leaves_what_a_transfer_took_over(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", LEASE)
    source, dest = await live_ses.add("file"), await live_ses.add("file")
    bad = []
    for index in range(8):
        lfn, data = f"/cta/stall/f{index}", os.urandom(SIZE)
        (tmp_path / f"f{index}").write_bytes(data)
        [done] = await admin.upload([tmp_path / f"f{index}"], lfn, source.name)
        assert done.status == "uploaded", done.error
        await admin.add_replicas([{"lfn": lfn, "se": dest.name, "status": "copying"}])
        async with api.client() as client:
            lease = UploadLease(client, dest.name)
            assert await lease.take([lfn]) == {}
            await _write(client, dest, lfn, os.urandom(SIZE // 2))  # a partial copy, then the upload fails
            claim = client.set_replica_statuses

            async def stalled(replicas: Any, claim: Any = claim, lfn: str = lfn, data: bytes = data) -> Any:
                answer = await claim(replicas)  # copying -> unavailable; then the undo's process stalls
                await asyncio.sleep(LEASE)
                await _take_over_and_copy(database, admin, dest, lfn, data)
                return answer

            monkeypatch.setattr(client, "set_replica_statuses", stalled)
            await roll_back(client, dest, lease, PlannedFile(tmp_path / f"f{index}", lfn, SIZE),
                            endpoints(dest, lfn, "write")[0])
            await lease.close()
        replicas = {r["se"]: r["status"] for r in (await admin.get_file(lfn))["replicas"]}
        stored = live_ses.stored_file(dest.name, lfn)
        if replicas.get(dest.name) != "available" or not stored.exists() or stored.read_bytes() != data:
            bad.append((lfn, replicas, stored.exists()))
    assert bad == []  # an available replica removed, or its bytes deleted, by the stalled undo


async def _founded(api: RunningApi, client: Client, se: StorageElement, lease: UploadLease, lfn: str,
                   data: bytes) -> None:
    """An upload's registration that created the record of lfn with its replica on se, held."""
    sent = time.monotonic()
    made = await client.register_files([{"lfn": lfn, "size": len(data), "adler32": f"{zlib.adler32(data):08x}",
                                         "replicas": [{"se": se.name, "status": "copying", "writer": lease.writer}]}])
    assert made["successful"][lfn]["created"], made
    lease.adopt([lfn], sent)
    await _write(client, se, lfn, data[: len(data) // 2])


async def test_an_undo_killed_between_its_writes_leaves_no_record_without_replicas(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    se = await live_ses.add("file")
    empty = []
    for index in range(8):
        lfn, data = f"/cta/killed/f{index}", os.urandom(SIZE)
        async with api.client() as client:
            lease = UploadLease(client, se.name)
            await _founded(api, client, se, lease, lfn, data)
            request, removed = client.request, []

            async def killed(method: str, path: str, *args: Any, request: Any = request, removed: list[str] = removed,
                             **kw: Any) -> Any:
                if removed:  # the process died right after the undo's first removal
                    raise ServiceUnavailable("killed")
                answer = await request(method, path, *args, **kw)
                if path in ("/replicas/remove", "/replicas/undo"):
                    removed.append(path)
                return answer

            monkeypatch.setattr(client, "request", killed)
            item = PlannedFile(tmp_path / "none", lfn, len(data), created=True)
            await roll_back(client, se, lease, item, endpoints(se, lfn, "write")[0])
            await lease.close()
        found = (await admin.lookup_files([lfn]))["successful"].get(lfn)
        if found is not None and not found.get("replicas"):
            empty.append(lfn)
    assert empty == []


async def test_an_undo_leaves_a_record_it_founded_that_another_replica_joined(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    se, other = await live_ses.add("file"), await live_ses.add("file")
    data = os.urandom(SIZE)
    async with api.client() as client:
        lease = UploadLease(client, se.name)
        await _founded(api, client, se, lease, "/cta/joined", data)
        await admin.add_replicas([{"lfn": "/cta/joined", "se": other.name}])
        item = PlannedFile(tmp_path / "none", "/cta/joined", SIZE, created=True)
        assert await roll_back(client, se, lease, item, endpoints(se, "/cta/joined", "write")[0]) == [
            "registration undone"]
        await lease.close()
    found = await admin.get_file("/cta/joined")
    assert [r["se"] for r in found["replicas"]] == [other.name]
    assert not live_ses.stored_file(se.name, "/cta/joined").exists()


async def test_a_failed_upload_leaves_the_record_of_a_finished_upload_whose_replica_it_took_over(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replica an upload founded its record with, once `available`, founds nothing any more: a
    later copy to it (a transfer's, after it went bad) taken over by an upload that fails does
    not take the file's record (its metadata, its owner) with it."""
    monkeypatch.setattr(catalogue.upload_leases, "TRANSFER_LEASE_S", LEASE)
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", LEASE)
    se = await live_ses.add("file")
    local, data = tmp_path / "f", os.urandom(SIZE)
    local.write_bytes(data)
    [done] = await admin.upload([local], "/cta/finished", se.name)
    assert done.status == "uploaded", done.error
    await admin.set_replica_status("/cta/finished", se.name, "bad", expected="available")
    assert await destination.register_copying(database, "/cta/finished", se) == "copying"  # a transfer, which dies
    await asyncio.sleep(LEASE + 0.1)
    assert await hold_for_transfers(database, [("/cta/finished", se.name)]) == {}
    await asyncio.sleep(LEASE + 0.1)
    local.write_bytes(data)  # the same file again, changed while it is sent: it fails
    [failed] = await admin.upload([local], "/cta/finished", se.name, progress=ChangesTheFileWhenItStarts(local))
    assert (failed.status, failed.code) != ("failed", "refused"), failed
    assert failed.status == "failed", failed
    assert "/cta/finished" in (await admin.lookup_files(["/cta/finished"]))["successful"]


async def test_a_store_failing_after_a_stall_leaves_the_bytes_of_the_writer_that_took_the_replica_over(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store fails (the storage errs) after the upload fell silent past its lease (its
    renewals late) and a transfer took the replica over and copied it: the upload's clean-up of
    its partial object deletes nothing then, nor does its undo."""
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", LEASE)
    monkeypatch.setattr(dataio.upload_lease, "LEASE_S", LEASE)  # as the server answers holds
    monkeypatch.setattr(dataio.upload_lease, "RENEWALS", 0.2)  # a renewal every 2 s: late, as after a stall
    source, dest = await live_ses.add("file"), await live_ses.add("file")
    bad = []
    for index in range(6):
        lfn, data = f"/cta/storing/f{index}", os.urandom(SIZE)
        (tmp_path / f"f{index}").write_bytes(data)
        [done] = await admin.upload([tmp_path / f"f{index}"], lfn, source.name)
        assert done.status == "uploaded", done.error

        async def failing(client: Any, ep: Any, item: Any, sink: Any, lease: Any, data: bytes = data) -> None:
            await asyncio.sleep(LEASE + 0.1)  # silent past the lease, then taken over and copied
            await _take_over_and_copy(database, admin, dest, item.lfn, data)
            raise StorageError(f"{ep.url}: the storage went away")

        with monkeypatch.context() as patched:
            patched.setattr(dataio.upload, "_store", failing)
            patched.setattr(dataio.upload, "SMALL_FILE", 0)  # each file its own way (`_store_one`)
            [outcome] = await admin.upload([tmp_path / f"f{index}"], lfn, dest.name)
        assert outcome.status == "failed", outcome
        replicas = {r["se"]: r["status"] for r in (await admin.get_file(lfn))["replicas"]}
        stored = live_ses.stored_file(dest.name, lfn)
        if replicas.get(dest.name) != "available" or not stored.exists() or stored.read_bytes() != data:
            bad.append((lfn, replicas, stored.exists()))
    assert bad == []  # the transfer's bytes deleted under its available replica
