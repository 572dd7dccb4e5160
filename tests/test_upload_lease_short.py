"""An upload's lease on the replicas it writes is short (LEASE_S, tens of seconds) and renewed in
the background while bytes move: a killed upload blocks its file for at most LEASE_S, a live one
is never taken over, and one that lost its lease stops writing and flips nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

import catalogue.upload_leases
import dataio.upload_lease
from cairn.sdk import Client
from catalogue.writer_tokens import LEASE_S, writer_digest
from dataio.status_batches import make_available
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import ROOT
from tests.fixtures.live_ses import LiveSEs

BIG = 256 << 20


def _start_cli_upload(api: RunningApi, local: Path, lfn: str, se: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({"PYTHONPATH": str(ROOT), "CAIRN_API_URL": api.url, "CAIRN_TOKEN": api.admin_token})
    return subprocess.Popen([sys.executable, "-m", "cairn", "upload", str(local), lfn, "--se", se], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _replica(client: Client, lfn: str, se: str) -> dict[str, object] | None:
    found = (await client.lookup_files([lfn]))["successful"].get(lfn) or {}
    return next((r for r in found.get("replicas", []) if r["se"] == se), None)


async def test_a_file_whose_upload_was_killed_can_be_uploaded_again_within_the_lease(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert LEASE_S <= 30  # it was 600 s: a retry got `in_progress` for ten minutes
    lease_s = 8.0  # the catalogue's here (the killed command's is the catalogue's): the test waits it out
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", lease_s)
    monkeypatch.setattr(dataio.upload_lease, "LEASE_S", lease_s)
    se = await live_ses.add("root")
    local = tmp_path / "big"
    await asyncio.to_thread(local.write_bytes, os.urandom(BIG))
    process = await asyncio.to_thread(_start_cli_upload, api, local, "/cta/killed", se.name)
    try:
        for _ in range(3000):  # registered: its replica is `copying`, held by the command
            if (await _replica(admin, "/cta/killed", se.name) or {}).get("status") == "copying":
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # bytes moving
    finally:
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
    killed = time.monotonic()
    assert (await _replica(admin, "/cta/killed", se.name) or {}).get("status") == "copying"  # killed mid-copy
    outcome = None
    while time.monotonic() - killed < 90:
        [outcome] = await admin.upload([local], "/cta/killed", se.name)
        if outcome.status == "uploaded":
            break
        assert outcome.code == "in_progress", outcome
        await asyncio.sleep(1)
    waited = time.monotonic() - killed
    assert outcome is not None and outcome.status == "uploaded", (waited, outcome)
    assert waited < lease_s + 10, waited
    print(f"uploaded again {waited:.1f} s after the first upload's kill -9 (a lease of {lease_s} s)")


class SlowChunks:
    """A progress sink that holds each chunk of the stream for a moment: a long copy."""

    def started(self, name: str, size: int | None) -> None:
        return None

    def advanced(self, name: str, nbytes: int) -> None:
        time.sleep(0.05)

    def finished(self, name: str, ok: bool) -> None:
        return None


async def test_an_upload_copying_for_many_leases_is_never_taken_over(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", 1.0)
    monkeypatch.setattr(dataio.upload_lease, "LEASE_S", 1.0, raising=False)
    se = await live_ses.add("file")
    local = tmp_path / "big"
    await asyncio.to_thread(local.write_bytes, os.urandom(64 << 20))
    async with api.client() as other:
        uploading = asyncio.ensure_future(admin.upload([local], "/cta/long", se.name, progress=SlowChunks()))
        started, refused, taken = time.monotonic(), 0, 0
        while not uploading.done():
            answer = await other.hold_replicas("o" * 32, se.name, ["/cta/long"])
            taken += len(answer["successful"])
            refused += sum(str(why).startswith("in progress") for why in answer["failed"].values())
            await asyncio.sleep(0.1)
        [outcome] = await uploading
    assert time.monotonic() - started > 3  # the copy outlasted three leases
    assert (taken, outcome.status) == (0, "uploaded"), (taken, outcome)
    assert refused >= 10


async def test_an_upload_whose_lease_was_taken_over_stops_and_flips_nothing(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The catalogue takes a replica silent for a second as dead; the upload (told 30 s) renews
    # every 2 s: between two renewals, another writer takes its replica over.
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", 1.0)
    monkeypatch.setattr(dataio.upload_lease, "RENEWALS", 15, raising=False)
    se = await live_ses.add("file")
    local = tmp_path / "big"
    await asyncio.to_thread(local.write_bytes, os.urandom(64 << 20))
    async with api.client() as other:
        uploading = asyncio.ensure_future(admin.upload([local], "/cta/taken", se.name, progress=SlowChunks()))
        taken = False
        while not taken and not uploading.done():
            taken = "/cta/taken" in (await other.hold_replicas("o" * 32, se.name, ["/cta/taken"]))["successful"]
            await asyncio.sleep(0.1)
        [outcome] = await uploading
    assert taken
    assert (outcome.status, outcome.code) == ("failed", "in_progress"), outcome
    replica = await _replica(admin, "/cta/taken", se.name)
    assert replica is not None and replica["status"] == "copying" and replica["writer"] == writer_digest("o" * 32)


async def test_a_flip_by_an_upload_that_lost_its_lease_is_refused(
    api: RunningApi, live_ses: LiveSEs, admin: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", 0.2)
    se = await live_ses.add("file")
    data = b"x" * 100
    await admin.register_files([{"lfn": "/cta/flip", "size": len(data), "adler32": f"{zlib.adler32(data):08x}",
                                 "replicas": [{"se": se.name, "status": "copying"}]}])
    async with api.client() as first, api.client() as second:
        assert "/cta/flip" in (await first.hold_replicas("a" * 32, se.name, ["/cta/flip"]))["successful"]
        await asyncio.sleep(0.3)
        assert "/cta/flip" in (await second.hold_replicas("b" * 32, se.name, ["/cta/flip"]))["successful"]
        refused = await make_available(first, se.name, ["/cta/flip"], writer="a" * 32)
        assert "/cta/flip" in refused
        assert (await _replica(admin, "/cta/flip", se.name) or {}).get("status") == "copying"
        assert await make_available(second, se.name, ["/cta/flip"], writer="b" * 32) == {}
