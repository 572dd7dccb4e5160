"""An upload and a transfer writing the same file to the same SE at once: only one of them writes
the replica's bytes, and what the catalogue calls available is on storage as registered.

A transfer's destination replica (`copying` while it copies) is held by its request
(`catalogue.upload_leases`): an upload of the same file to that SE fails `in_progress`, writing
nothing; a transfer meeting a replica an upload holds waits and tries again, copying nothing
over it. Checked on the storage itself, with the upload's local file changing once it starts
storing (it then fails its checksum and undoes what it wrote).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import zlib
from collections import Counter
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

import catalogue.upload_leases
import transfers.worker
from cairn.sdk import Client
from catalogue.storage_elements import list_storage_elements
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.transfers import fast_settings
from tests.test_upload_concurrent_writers import ChangesTheFileWhenItStarts
from transfers import destination, queueing
from transfers import requests as rq
from transfers.worker import TransferWorker

# Random interleavings on top of the two windows the tests below hold open one at a time (an upload
# meeting a transfer's copy, a transfer meeting an upload's hold). Before the fix 2-8 of 120 disk
# rounds and 2 of 40 XRootD rounds went wrong.
ROUNDS = {"file": 60, "root": 40}
SIZE = 256 << 10
BIG = 256 << 20  # a copy lasting a few seconds


def _stored_matches(path: Path, size: int, adler32: str) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return len(data) == size and f"{zlib.adler32(data):08x}" == adler32


async def _ended(database: AsyncDatabase[Document], request_id: str) -> Document:
    async with asyncio.timeout(60):
        while True:
            doc = await rq.get_request(database, request_id)
            if doc is not None and doc["state"] in rq.FINAL_STATES:
                return doc
            await asyncio.sleep(0.05)


async def _one_round(api: RunningApi, live_ses: LiveSEs, database: AsyncDatabase[Document], source: str,
                     dest: str, tmp_path: Path, index: int) -> list[str]:
    """A file on `source` is replicated to `dest` while an upload of it to `dest` starts (its local
    file changing once it stores); what is wrong once both ended."""
    content = os.urandom(SIZE)
    local = tmp_path / f"u{index}"
    local.write_bytes(content)
    lfn = f"/cta/xfer/f{index}"
    async with api.client() as client:
        [first] = await client.upload([local], lfn, source)
        assert first.status == "uploaded", first.error
        local.write_bytes(content)
        submitted = await queueing.submit_transfers(database, [{"lfn": lfn, "dest_se": dest}], requester="t")
        [request_id] = [str(rid) for rid in submitted["successful"].values()]
        await asyncio.sleep(random.uniform(0, 0.25))  # the worker claims within its idle sleep (0.1 s)
        outcomes = await client.upload([local], lfn, dest, progress=ChangesTheFileWhenItStarts(local))
        request = await _ended(database, request_id)
        found = (await client.lookup_files([lfn]))["successful"][lfn]
    bad = []
    replicas = [r for r in found.get("replicas", []) if r["se"] == dest]
    available = [r for r in replicas if r["status"] == "available"]
    if available and not _stored_matches(live_ses.stored_file(dest, lfn), found["size"], found["adler32"]):
        bad.append("available replica whose stored bytes are not the catalogue's")
    if request["state"] == "done" and not available:
        bad.append("the transfer is done, the replica is not available")
    if any(o.status == "uploaded" for o in outcomes):
        bad.append("the changed upload said uploaded")
    if [r for r in replicas if r["status"] != "available"]:
        bad.append(f"a {replicas[0]['status']} replica is left")
    return bad


async def _rounds(api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], kind: str,
                  tmp_path: Path) -> Counter[str]:
    source, dest = await live_ses.add("file"), await live_ses.add(kind)
    await admin.mkdir("/cta/xfer")
    worker = TransferWorker(fast_settings(api.settings, retry_base_s=0.05, retry_cap_s=0.2), database)
    running = asyncio.create_task(worker.run())
    bad: Counter[str] = Counter()
    try:
        for index in range(ROUNDS[kind]):
            bad.update(await _one_round(api, live_ses, database, source.name, dest.name, tmp_path, index))
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await running
    return bad


async def test_an_upload_racing_a_transfer_to_a_disk_se_leaves_the_stored_bytes_as_registered(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path
) -> None:
    assert await _rounds(api, live_ses, admin, database, "file", tmp_path) == Counter()


async def test_an_upload_racing_a_transfer_to_an_xrootd_se_leaves_the_stored_bytes_as_registered(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path
) -> None:
    assert await _rounds(api, live_ses, admin, database, "root", tmp_path) == Counter()


async def _on_source(client: Client, source: str, lfn: str, local: Path) -> bytes:
    data = os.urandom(SIZE)
    await asyncio.to_thread(local.write_bytes, data)
    [done] = await client.upload([local], lfn, source)
    assert done.status == "uploaded", done.error
    return data


async def test_an_upload_of_a_file_a_transfer_is_copying_fails_in_progress_and_writes_nothing(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path
) -> None:
    source, dest = await live_ses.add("file"), await live_ses.add("root")
    local = tmp_path / "f"
    await _on_source(admin, source.name, "/cta/copying", local)
    file_doc = await database["files"].find_one({"_id": "/cta/copying"})
    ses = {se.name: se for se in await list_storage_elements(database)}
    # What a transfer worker registers before its copy starts (the copy itself still to come).
    assert await destination.register_copying_many(database, [(file_doc, ses[dest.name])]) == {
        ("/cta/copying", dest.name): "copying"}
    outcome = (await admin.upload([local], "/cta/copying", dest.name))[0]
    assert (outcome.status, outcome.code) == ("failed", "in_progress"), outcome
    assert "a transfer is copying" in (outcome.error or "")
    assert not live_ses.stored_file(dest.name, "/cta/copying").exists()


async def test_a_transfer_meeting_a_replica_an_upload_holds_waits_then_takes_it_once_that_upload_fell_silent(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = await live_ses.add("file"), await live_ses.add("root")
    data = await _on_source(admin, source.name, "/cta/held", tmp_path / "f")
    await admin.add_replicas([{"lfn": "/cta/held", "se": dest.name, "status": "copying"}])
    async with api.client() as uploading:
        assert "/cta/held" in (await uploading.hold_replicas("u" * 32, dest.name, ["/cta/held"]))["successful"]
    submitted = await queueing.submit_transfers(database, [{"lfn": "/cta/held", "dest_se": dest.name}], requester="t")
    [request_id] = submitted["successful"].values()
    worker = TransferWorker(fast_settings(api.settings, retry_base_s=0.1, retry_cap_s=0.1), database)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            while True:
                if (await rq.get_request(database, request_id) or {}).get("error_class") == "destination_in_progress":
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # many more tries than its 5 attempts: waiting uses none of them
        waiting = await rq.get_request(database, request_id)
        assert waiting is not None and waiting["state"] != "failed" and waiting["attempts"] <= 1, waiting
        assert not live_ses.stored_file(dest.name, "/cta/held").exists()  # nothing copied over the upload's
        monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", 1)  # the upload falls silent: taken over
        request = await _ended(database, request_id)
    finally:
        worker.stop()
        await running
    assert request["state"] == "done", request
    assert live_ses.stored_file(dest.name, "/cta/held").read_bytes() == data
    found = await admin.get_file("/cta/held")
    assert [r["status"] for r in found["replicas"] if r["se"] == dest.name] == ["available"]


async def test_a_transfers_hold_is_renewed_while_it_copies_so_an_upload_never_takes_it_over(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Renewed with the request's lease (every 0.25 s here): a second of silence would lose it (half
    # a second was lost to a loaded machine's stalls once: the test is of the renewals, not of those).
    monkeypatch.setattr(catalogue.upload_leases, "TRANSFER_LEASE_S", 1.0)
    monkeypatch.setattr(transfers.worker, "TRANSFER_LEASE_S", 1.0)
    source, dest = await live_ses.add("file"), await live_ses.add("root")
    local = tmp_path / "big"
    await asyncio.to_thread(local.write_bytes, os.urandom(BIG))
    [done] = await admin.upload([local], "/cta/big", source.name)
    assert done.status == "uploaded", done.error
    submitted = await queueing.submit_transfers(database, [{"lfn": "/cta/big", "dest_se": dest.name}], requester="t")
    [request_id] = submitted["successful"].values()
    worker = TransferWorker(fast_settings(api.settings, lease_s=1.0), database)
    running = asyncio.create_task(worker.run())
    refused: Counter[str] = Counter()
    try:
        async with api.client() as uploading:
            while (await rq.get_request(database, request_id) or {}).get("state") not in rq.FINAL_STATES:
                answer = await uploading.hold_replicas("u" * 32, dest.name, ["/cta/big"])
                refused.update(str(why).split(":")[0] for why in answer["failed"].values())
                assert not answer["successful"], answer  # taken over while the transfer copied
                await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await running
    assert refused["in progress"] >= 10, refused  # the copy outlasted the hold's lease (0.1 s apart)
    found = await admin.get_file("/cta/big")
    assert _stored_matches(live_ses.stored_file(dest.name, "/cta/big"), found["size"], found["adler32"])
