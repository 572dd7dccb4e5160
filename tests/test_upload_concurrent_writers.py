"""Two uploads of one file to one SE at once (a retry, two shells, two hosts): only one of them
writes the replica's bytes; what the catalogue calls available is on storage as registered."""

from __future__ import annotations

import asyncio
import os
import zlib
from collections import Counter
from pathlib import Path

import pytest

import catalogue.upload_leases
from cairn.sdk import Client
from dataio.progress import FileOutcome
from dataio.upload_lease import UploadLease
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs

ROUNDS = {"file": 150, "root": 40}


class ChangesTheFileWhenItStarts:
    """A progress sink that rewrites the local file once its upload starts storing it (after its
    sum was registered): that upload's bytes are not the file's, so it fails and undoes them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def started(self, name: str, size: int | None) -> None:
        with self.path.open("r+b") as handle:
            handle.seek(0)
            handle.write(os.urandom(16))

    def advanced(self, name: str, nbytes: int) -> None:
        return None

    def finished(self, name: str, ok: bool) -> None:
        return None


def _stored_matches(path: Path, size: int, adler32: str) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return len(data) == size and f"{zlib.adler32(data):08x}" == adler32


async def _one_round(api: RunningApi, live_ses: LiveSEs, se: str, tmp_path: Path, index: int) -> list[str]:
    """Two clients upload the same bytes to one LFN at once (the second's local file changes once
    it starts storing, in every other round); what is wrong afterwards."""
    content = os.urandom(64 << 10)
    first, second = tmp_path / f"a{index}", tmp_path / f"b{index}"
    first.write_bytes(content)
    second.write_bytes(content)
    lfn = f"/cta/race/f{index}"
    sink = ChangesTheFileWhenItStarts(second) if index % 2 else None
    async with api.client() as one, api.client() as two:
        outcomes = await asyncio.gather(one.upload([first], lfn, se), two.upload([second], lfn, se, progress=sink),
                                        return_exceptions=True)
    raised = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    said: list[FileOutcome] = [o[0] for o in outcomes if not isinstance(o, BaseException)]
    async with api.client() as reader:
        found = (await reader.lookup_files([lfn]))["successful"].get(lfn)
    bad = [f"an upload raised {why.split('(')[0]}" for why in raised]
    available = [r for r in (found or {}).get("replicas", []) if r["se"] == se and r["status"] == "available"]
    if available and not _stored_matches(live_ses.stored_file(se, lfn), found["size"], found["adler32"]):
        bad.append("available replica whose stored bytes are not the catalogue's")
    if any(o.status in ("uploaded", "exists") for o in said) and not available:
        bad.append("an upload said uploaded/exists, the replica is not available")
    if sum(o.status == "uploaded" for o in said) > 1:
        bad.append("both uploads wrote the replica")
    return bad


async def _rounds(api: RunningApi, live_ses: LiveSEs, admin: Client, kind: str, tmp_path: Path) -> Counter[str]:
    se = await live_ses.add(kind)
    await admin.mkdir("/cta/race")
    bad: Counter[str] = Counter()
    for index in range(ROUNDS[kind]):
        bad.update(await _one_round(api, live_ses, se.name, tmp_path, index))
    return bad


async def test_two_uploads_of_one_file_to_a_disk_se_leave_the_stored_bytes_as_registered(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    assert await _rounds(api, live_ses, admin, "file", tmp_path) == Counter()


async def test_two_uploads_of_one_file_to_an_xrootd_se_leave_the_stored_bytes_as_registered(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    assert await _rounds(api, live_ses, admin, "root", tmp_path) == Counter()


async def _dead_upload(api: RunningApi, admin: Client, se: str, lfn: str, data: bytes) -> None:
    """What an upload that died after registering leaves: a `copying` replica it held."""
    await admin.register_files([{"lfn": lfn, "size": len(data), "adler32": f"{zlib.adler32(data):08x}",
                                 "replicas": [{"se": se, "status": "copying"}]}])
    async with api.client() as dead:
        held = await dead.hold_replicas("d" * 32, se, [lfn])
    assert lfn in held["successful"], held


async def test_an_upload_meeting_one_in_progress_fails_as_in_progress_and_writes_nothing(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    local, data = tmp_path / "f", os.urandom(1000)
    local.write_bytes(data)
    await _dead_upload(api, admin, se.name, "/cta/held", data)
    outcome = (await admin.upload([local], "/cta/held", se.name))[0]
    assert (outcome.status, outcome.code) == ("failed", "in_progress"), outcome
    assert not live_ses.stored_file(se.name, "/cta/held").exists()
    record = await admin.get_file("/cta/held")
    assert record["replicas"][0]["status"] == "copying"
    assert "d" * 32 not in str(record)  # the holder's token is not shown to readers (its digest is kept)


async def test_a_copying_replica_whose_upload_fell_silent_is_taken_over(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", 1)
    se = await live_ses.add("file")
    local, data = tmp_path / "f", os.urandom(1000)
    local.write_bytes(data)
    await _dead_upload(api, admin, se.name, "/cta/dead", data)
    await asyncio.sleep(1.2)
    outcome = (await admin.upload([local], "/cta/dead", se.name))[0]
    assert outcome.status == "uploaded", outcome.error
    assert _stored_matches(live_ses.stored_file(se.name, "/cta/dead"), 1000, outcome.adler32 or "")


async def test_a_held_lease_is_renewed_while_its_upload_runs_so_it_is_not_taken_over(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue.upload_leases, "LEASE_S", 1)
    se = await live_ses.add("file")
    await admin.register_files([{"lfn": "/cta/long", "size": 1, "adler32": "00620062",
                                 "replicas": [{"se": se.name, "status": "copying"}]}])
    async with api.client() as one, api.client() as two:
        lease = UploadLease(one, se.name)
        assert await lease.take(["/cta/long"]) == {}
        await asyncio.sleep(2.5)  # two and a half lease periods: renewed in the background meanwhile
        other = await two.hold_replicas("o" * 32, se.name, ["/cta/long"])
        assert await lease.ensure(["/cta/long"]) == {}
        await lease.close()
    assert other["failed"]["/cta/long"].startswith("in progress"), other
