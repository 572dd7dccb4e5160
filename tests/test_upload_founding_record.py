"""A file record an upload's registration created goes with that upload's undo, also when another
upload took the replica over (the first fell silent) and then failed: whoever holds the founding
replica removes the record it leaves without replicas. A record that was there before the upload
(registered without replicas) stays."""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path

import pytest

import catalogue.upload_leases
from cairn.sdk import Client
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.test_upload_concurrent_writers import ChangesTheFileWhenItStarts

SIZE = 64 << 10
# Each round is the same sequence (not a race): before its fix all 20 of 20 left the record, so
# 5 rounds are as sure to see it.
ROUNDS = 5


async def _exists(client: Client, lfn: str) -> bool:
    return lfn in (await client.lookup_files([lfn]))["successful"]


async def test_a_record_an_upload_created_goes_when_the_upload_that_took_it_over_fails(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", 0.5)
    se = await live_ses.add("file")
    await admin.mkdir("/cta/founding")
    left = 0
    for index in range(ROUNDS):
        lfn, local = f"/cta/founding/f{index}", tmp_path / f"f{index}"
        data = os.urandom(SIZE)
        local.write_bytes(data)
        async with api.client() as first:  # registers (creating the record) and falls silent
            made = await first.register_files([{"lfn": lfn, "size": SIZE, "adler32": f"{zlib.adler32(data):08x}",
                                                "replicas": [{"se": se.name, "status": "copying",
                                                              "writer": "f" * 32}]}])
        assert made["successful"][lfn]["created"], made
        await asyncio.sleep(0.6)
        [outcome] = await admin.upload([local], lfn, se.name, progress=ChangesTheFileWhenItStarts(local))
        assert outcome.status == "failed", outcome
        left += await _exists(admin, lfn)
    assert left == 0  # records left without replicas


async def test_a_record_registered_before_the_upload_stays_when_that_upload_fails(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    local, data = tmp_path / "f", os.urandom(SIZE)
    local.write_bytes(data)
    await admin.register_files([{"lfn": "/cta/kept", "size": SIZE, "adler32": f"{zlib.adler32(data):08x}"}])
    [outcome] = await admin.upload([local], "/cta/kept", se.name, progress=ChangesTheFileWhenItStarts(local))
    assert outcome.status == "failed", outcome
    assert await _exists(admin, "/cta/kept")
