"""Faults on the way up and down: each a clear error naming the SE and LFN, and never a file
registered without its bytes, nor bad bytes handed over as good."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.embedded_db import free_port
from cairn.embedded_xrootd import XRootDServer
from cairn.sdk import Client
from dataio.progress import FileOutcome
from kernel.errors import Forbidden, InvalidInput, NotFound, ServiceUnavailable
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import BIG_SIZE, Payload
from tests.test_upload_download import CountingSink


def only(outcomes: list[FileOutcome]) -> FileOutcome:
    assert len(outcomes) == 1
    return outcomes[0]


def flip_byte(path: Path, offset: int) -> None:
    """Corrupt one byte of a stored replica behind the storage's back."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))  # XRootD caches checksums by mtime


async def _gone(admin: Client, lfn: str) -> bool:
    try:
        await admin.get_file(lfn)
    except NotFound:
        return True
    return False


class ChangesTheFileMidway:
    """A progress sink that rewrites the tail of the local file once the first chunk went out:
    the bytes already stored no longer match what was registered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = False

    def started(self, name: str, size: int | None) -> None:
        return None

    def advanced(self, name: str, nbytes: int) -> None:
        if not self.done:
            self.done = True
            with self.path.open("r+b") as handle:
                handle.seek(-100, os.SEEK_END)
                handle.write(os.urandom(100))

    def finished(self, name: str, ok: bool) -> None:
        return None


async def test_a_failed_upload_leaves_nothing_registered_and_no_object(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    local = tmp_path / "changing"
    shutil.copyfile(payload(3 << 20).path, local)
    result = only(await admin.upload([local], "/cta/f", se.name, progress=ChangesTheFileMidway(local)))
    assert (result.status, result.code) == ("failed", "checksum_mismatch")
    assert se.name in (result.error or "") and "/cta/f" in (result.error or "")
    assert await _gone(admin, "/cta/f")
    assert "registration undone" in result.notes
    stored_dir = live_ses.stored_file(se.name, "/cta/f").parent
    assert not stored_dir.exists() or list(stored_dir.iterdir()) == []


async def test_an_upload_to_a_stopped_server_fails_naming_se_and_lfn_and_registers_nothing(
    live_ses: LiveSEs, admin: Client, xrootd_stoppable: XRootDServer, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("xrootd", on=xrootd_stoppable)
    xrootd_stoppable.stop()
    result = only(await admin.upload([payload(10).path], "/cta/f", se.name))
    assert (result.status, result.code) == ("failed", "service_unavailable")
    assert se.name in (result.error or "") and "/cta/f" in (result.error or "")
    assert any("trying root" in note for note in result.notes)  # davs first, then root
    assert await _gone(admin, "/cta/f")


async def test_an_se_switched_off_for_writing_refuses_before_registering(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("file")
    await admin.update_se(se.name, write_enabled=False)
    with pytest.raises(Forbidden) as caught:
        await admin.upload([payload(10).path], "/cta/f", se.name)
    assert se.name in caught.value.message and "/cta/f" in caught.value.message
    assert await _gone(admin, "/cta/f")


async def test_a_caller_without_write_permission_is_refused_before_bytes_move(
    api: RunningApi, live_ses: LiveSEs, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("file")
    async with api.client(api.token("bob", vo="km3net", groups=("km3net",))) as bob:
        result = only(await bob.upload([payload(10).path], "/cta/f", se.name))
    assert (result.status, result.code) == ("failed", "refused")
    assert "permission denied" in (result.error or "") and se.name in (result.error or "")
    assert not live_ses.stored_file(se.name, "/cta/f").exists()


async def test_an_unknown_scheme_is_refused_naming_it(live_ses: LiveSEs, admin: Client) -> None:
    se = await live_ses.add("file")
    with pytest.raises(InvalidInput, match="'gopher'"):
        await admin.upload(["gopher://host/f"], "/cta/f", se.name)


async def test_an_unreachable_api_is_service_unavailable(payload: Callable[[int], Payload], tmp_path: Path) -> None:
    async with Client(f"http://127.0.0.1:{free_port()}", "token") as client:
        with pytest.raises(ServiceUnavailable, match="Cairn API"):
            await client.upload([payload(10).path], "/cta/f", "ANY")
        with pytest.raises(ServiceUnavailable, match="Cairn API"):
            await client.download(["/cta/f"], tmp_path)


async def test_a_corrupted_replica_is_marked_bad_and_the_next_one_is_served(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    near, far = await live_ses.add("file", site="HERE"), await live_ses.add("root", site="THERE")
    data = payload(1 << 20)
    for se in (near, far):
        assert only(await admin.upload([data.path], "/cta/f", se.name)).status == "uploaded"
    flip_byte(live_ses.stored_file(near.name, "/cta/f"), 1000)
    sink = CountingSink()
    result = only(await admin.download(["/cta/f"], tmp_path / "f", site="HERE", progress=sink))
    assert (result.status, result.se) == ("downloaded", far.name)
    assert sink.moved["/cta/f"] == data.size  # the bytes of the bad replica are not counted
    assert any(near.name in n and "corrupted" in n and "marked bad" in n for n in result.notes)
    assert (tmp_path / "f").read_bytes() == data.path.read_bytes()
    statuses = {r["se"]: r["status"] for r in (await admin.get_file("/cta/f"))["replicas"]}
    assert statuses == {near.name: "bad", far.name: "available"}


async def test_a_reader_who_may_not_mark_it_bad_skips_the_corrupted_replica_and_says_so(
    api: RunningApi, live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    near, far = await live_ses.add("root", site="HERE"), await live_ses.add("file", site="THERE")
    data = payload(1 << 20)
    for se in (near, far):
        await admin.upload([data.path], "/cta/f", se.name)
    flip_byte(live_ses.stored_file(near.name, "/cta/f"), 10)
    async with api.client(api.token("bob", vo="km3net", groups=("km3net",))) as bob:  # r as other, no w
        result = only(await bob.download(["/cta/f"], tmp_path / "f", site="HERE"))
    assert (result.status, result.se) == ("downloaded", far.name)
    assert any("not permitted to mark it bad" in n and near.name in n for n in result.notes)
    statuses = {r["se"]: r["status"] for r in (await admin.get_file("/cta/f"))["replicas"]}
    assert statuses[near.name] == "available"


@pytest.mark.parametrize("kind", ["file", "davs"])
async def test_a_lone_corrupted_replica_fails_and_leaves_no_local_file(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path, kind: str
) -> None:
    se = await live_ses.add(kind)
    await admin.upload([payload(4096).path], "/cta/f", se.name)
    flip_byte(live_ses.stored_file(se.name, "/cta/f"), 7)
    result = only(await admin.download(["/cta/f"], tmp_path / "out" / "f"))
    assert (result.status, result.code) == ("failed", "checksum_mismatch")
    assert se.name in (result.error or "") and "/cta/f" in (result.error or "")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


async def test_an_se_switched_off_for_reading_is_named_when_nothing_else_is_readable(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    await admin.upload([payload(10).path], "/cta/f", se.name)
    await admin.update_se(se.name, read_enabled=False)
    result = only(await admin.download(["/cta/f"], tmp_path / "f"))
    assert (result.status, result.code) == ("failed", "no_readable_replica")
    assert f"SE {se.name} is switched off for reading" in (result.error or "") and "/cta/f" in (result.error or "")


async def test_a_missing_object_is_not_found_naming_se_and_lfn(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("root")
    await admin.upload([payload(10).path], "/cta/f", se.name)
    live_ses.stored_file(se.name, "/cta/f").unlink()
    result = only(await admin.download(["/cta/f"], tmp_path / "f"))
    assert (result.status, result.code) == ("failed", "not_found")
    assert se.name in (result.error or "") and "/cta/f" in (result.error or "")


async def test_an_unknown_lfn_fails_that_file_only(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    await admin.upload([payload(10).path], "/cta/f", se.name)
    results = await admin.download(["/cta/f", "/cta/none"], tmp_path)
    assert [(r.lfn, r.status, r.code) for r in results] == [
        ("/cta/f", "downloaded", None), ("/cta/none", "failed", "not_found")]


async def test_a_bad_replica_on_the_se_is_not_overwritten(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("file")
    data = payload(300)
    await admin.upload([data.path], "/cta/f", se.name)
    await admin.set_replica_status("/cta/f", se.name, "bad")
    stored = live_ses.stored_file(se.name, "/cta/f")
    before = stored.stat().st_mtime_ns
    result = only(await admin.upload([data.path], "/cta/f", se.name))
    assert (result.status, result.code) == ("failed", "conflict") and "bad replica" in (result.error or "")
    assert stored.stat().st_mtime_ns == before
    assert [r["status"] for r in (await admin.get_file("/cta/f"))["replicas"]] == ["bad"]


class SignalsFirstBytes:
    """A progress sink that tells the test when bytes have started to move."""

    def __init__(self) -> None:
        self.moving = asyncio.Event()

    def started(self, name: str, size: int | None) -> None:
        return None

    def advanced(self, name: str, nbytes: int) -> None:
        self.moving.set()

    def finished(self, name: str, ok: bool) -> None:
        return None


async def test_an_interrupted_upload_leaves_nothing_registered_and_no_object(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("file")
    sink = SignalsFirstBytes()
    task = asyncio.create_task(admin.upload([payload(BIG_SIZE).path], "/cta/f", se.name, progress=sink))
    await asyncio.wait_for(sink.moving.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _gone(admin, "/cta/f")
    stored_dir = live_ses.stored_file(se.name, "/cta/f").parent
    assert not stored_dir.exists() or list(stored_dir.iterdir()) == []


async def test_an_unwritable_destination_fails_that_file_without_trying_other_replicas(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    await admin.upload([payload(10).path], "/cta/f", se.name)
    (tmp_path / "plain").write_bytes(b"not a directory")
    result = only(await admin.download(["/cta/f"], tmp_path / "plain" / "f"))
    assert (result.status, result.code) == ("failed", "local_error")
    assert "/cta/f" in (result.error or "") and str(tmp_path / "plain") in (result.error or "")


class ChangesOneFileAtItsStart(ChangesTheFileMidway):
    """Rewrites the tail of one local file when its copy is about to start (after its adler32
    was taken and registered)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.name = ""

    def started(self, name: str, size: int | None) -> None:
        if name == self.name:
            super().advanced(name, 0)

    def advanced(self, name: str, nbytes: int) -> None:
        return None


async def test_a_file_that_changed_fails_alone_among_many_small_files_to_a_disk_se(
    live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    sources = []
    for index in range(40):  # several of the chunks a disk SE's small files are copied in
        path = tmp_path / f"f{index:02d}"
        path.write_bytes(os.urandom(1000 + index))
        sources.append(path)
    sink = ChangesOneFileAtItsStart(sources[21])
    sink.name = "/cta/many/f21"
    outcomes = await admin.upload(sources, "/cta/many/", se.name, progress=sink)
    assert [o.status for o in outcomes] == ["uploaded"] * 21 + ["failed"] + ["uploaded"] * 18
    bad = outcomes[21]
    assert bad.code == "checksum_mismatch" and se.name in (bad.error or "") and "/cta/many/f21" in (bad.error or "")
    assert await _gone(admin, "/cta/many/f21")
    stored = live_ses.stored_file(se.name, "/cta/many/f00").parent
    assert sorted(p.name for p in stored.iterdir()) == [f"f{i:02d}" for i in range(40) if i != 21]
    for index, source in enumerate(sources):
        if index != 21:
            assert (stored / source.name).read_bytes() == source.read_bytes()
    replicas = await admin.get_replicas([o.lfn for o in outcomes if o.ok])
    assert len(replicas["successful"]) == 39
    assert all(r[0]["status"] == "available" for r in replicas["successful"].values())


async def test_local_files_that_cannot_be_read_fail_alone_and_register_nothing(
    live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    good = [tmp_path / "a", tmp_path / "z"]
    for path in good:
        path.write_bytes(os.urandom(2000))
    gone = tmp_path / "gone"
    gone.symlink_to(tmp_path / "nowhere")
    folder = tmp_path / "folder"
    folder.mkdir()
    # A regular file (size 0) whose reading fails: this process's memory read from address 0 (EIO).
    unreadable = Path("/proc/self/mem")
    outcomes = await admin.upload([good[0], gone, folder, unreadable, good[1]], "/cta/mixed/", se.name)
    assert [(o.lfn, o.status) for o in outcomes] == [
        ("/cta/mixed/a", "uploaded"), ("/cta/mixed/gone", "failed"), ("/cta/mixed/folder", "failed"),
        ("/cta/mixed/mem", "failed"), ("/cta/mixed/z", "uploaded")]
    assert "No such file" in (outcomes[1].error or "") and "not a regular file" in (outcomes[2].error or "")
    assert "/proc/self/mem" in (outcomes[3].error or "") and "Input/output error" in (outcomes[3].error or "")
    assert {o.code for o in outcomes if not o.ok} == {InvalidInput.code}
    looked = await admin.lookup_files([o.lfn for o in outcomes])
    assert sorted(looked["successful"]) == ["/cta/mixed/a", "/cta/mixed/z"]
    stored = live_ses.stored_file(se.name, "/cta/mixed/a").parent
    assert sorted(p.name for p in stored.iterdir()) == ["a", "z"]
    assert all((stored / p.name).read_bytes() == p.read_bytes() for p in good)
