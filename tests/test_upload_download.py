"""Upload and download through the catalogue on every kind of SE, against the real servers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

import dataio.upload
from cairn.sdk import Client, SyncClient
from dataio.progress import FileOutcome
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import BIG_SIZE, Payload, adler32_of_file, small_files


class CountingSink:
    """A progress sink that remembers what it was told."""

    def __init__(self) -> None:
        self.sizes: dict[str, int | None] = {}
        self.moved: dict[str, int] = {}
        self.done: dict[str, bool] = {}

    def started(self, name: str, size: int | None) -> None:
        self.sizes[name] = size

    def advanced(self, name: str, nbytes: int) -> None:
        self.moved[name] = self.moved.get(name, 0) + nbytes

    def finished(self, name: str, ok: bool) -> None:
        self.done[name] = ok


def only(outcomes: list[FileOutcome]) -> FileOutcome:
    assert len(outcomes) == 1
    return outcomes[0]


@pytest.mark.parametrize("size", [0, 1])
@pytest.mark.parametrize("kind", ["file", "s3", "davs", "root"])
async def test_round_trip_registers_an_available_replica_and_returns_the_same_bytes(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path, kind: str, size: int
) -> None:
    se = await live_ses.add(kind)
    data = payload(size)
    up = only(await admin.upload([data.path], "/cta/run1/f.dat", se.name, credentials=live_ses.credentials))
    assert (up.status, up.size, up.adler32) == ("uploaded", size, data.adler32), up.error
    record = await admin.get_file("/cta/run1/f.dat")
    assert (record["size"], record["adler32"]) == (size, data.adler32)
    assert [(r["se"], r["status"]) for r in record["replicas"]] == [(se.name, "available")]

    down = only(await admin.download(["/cta/run1/f.dat"], tmp_path / "back", credentials=live_ses.credentials))
    assert (down.status, down.se) == ("downloaded", se.name), down.error
    assert (tmp_path / "back").read_bytes() == data.path.read_bytes()


@pytest.mark.parametrize("kind", ["davs", "s3"])
async def test_a_100_mib_file_streams_up_and_down_with_progress(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path, kind: str
) -> None:
    se = await live_ses.add(kind)
    data = payload(BIG_SIZE)
    sink = CountingSink()
    up = only(await admin.upload([data.path], "/cta/big", se.name, credentials=live_ses.credentials, progress=sink))
    assert up.status == "uploaded", up.error
    assert (sink.sizes["/cta/big"], sink.moved["/cta/big"], sink.done["/cta/big"]) == (BIG_SIZE, BIG_SIZE, True)
    sink = CountingSink()
    down = only(await admin.download(["/cta/big"], tmp_path / "big", credentials=live_ses.credentials,
                                     progress=sink))
    assert down.status == "downloaded", down.error
    assert sink.moved["/cta/big"] == BIG_SIZE
    assert adler32_of_file(tmp_path / "big") == data.adler32


async def test_many_files_go_into_a_directory_lfn_and_come_back_into_a_directory(
    live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    se = await live_ses.add("root")
    sources = []
    for index in range(3):
        path = tmp_path / f"part{index}.txt"
        path.write_bytes(f"part {index}\n".encode() * (index + 1))
        sources.append(path)
    ups = await admin.upload(sources, "/cta/parts", se.name)
    assert [(u.lfn, u.status) for u in ups] == [(f"/cta/parts/part{i}.txt", "uploaded") for i in range(3)]
    lfns = [u.lfn for u in ups]
    downs = await admin.download(lfns, tmp_path / "out")
    assert all(d.status == "downloaded" for d in downs), [d.error for d in downs]
    for source in sources:
        assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()


async def test_uploading_the_same_file_again_reports_it_exists(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("file")
    data = payload(1000)
    assert only(await admin.upload([data.path], "/cta/f", se.name)).status == "uploaded"
    again = only(await admin.upload([data.path], "/cta/f", se.name))
    assert again.status == "exists"


async def test_a_second_se_gets_a_second_replica_of_the_same_file(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    first, second = await live_ses.add("file"), await live_ses.add("root")
    data = payload(5000)
    for se in (first, second):
        assert only(await admin.upload([data.path], "/cta/f", se.name)).status == "uploaded"
    record = await admin.get_file("/cta/f")
    assert sorted((r["se"], r["status"]) for r in record["replicas"]) == [
        (first.name, "available"), (second.name, "available")]


async def test_replicas_at_the_readers_site_are_read_first(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    here, there = await live_ses.add("file", site="HERE"), await live_ses.add("file", site="THERE")
    data = payload(100)
    for se in (there, here):
        await admin.upload([data.path], "/cta/f", se.name)
    for site, expected in (("HERE", here.name), ("THERE", there.name)):
        down = only(await admin.download(["/cta/f"], tmp_path / site, site=site))
        assert down.se == expected


async def test_the_sync_client_uploads_and_downloads(
    api: RunningApi, live_ses: LiveSEs, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    data = payload(2000)

    def blocking() -> tuple[str, str]:
        with SyncClient(api.url, api.admin_token) as client:
            up = client.upload([data.path], "/cta/sync", se.name)
            down = client.download(["/cta/sync"], tmp_path / "sync")
        return up[0].status, down[0].status

    # The API runs on this test's event loop: the blocking client runs beside it.
    assert await asyncio.to_thread(blocking) == ("uploaded", "downloaded")
    assert (tmp_path / "sync").read_bytes() == data.path.read_bytes()



def observe_paths(client: Client) -> list[str]:
    """Give `client` a session of its own kind that records the API path of every request it sends."""
    paths: list[str] = []
    trace = aiohttp.TraceConfig()

    async def seen(_session: object, _context: object, params: aiohttp.TraceRequestStartParams) -> None:
        paths.append(params.url.path.removeprefix("/api/v1"))

    trace.on_request_start.append(seen)
    client._session = aiohttp.ClientSession(trace_configs=[trace])
    return paths

async def test_many_files_cost_bulk_catalogue_calls_not_one_lookup_per_file(
    api: RunningApi, live_ses: LiveSEs, tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    sources = small_files(tmp_path, 30, prefix="s", unit=b"small")
    async with api.client() as client:
        paths = observe_paths(client)
        ups = await client.upload(sources, "/cta/small/", se.name, concurrency=8)
        assert [u.status for u in ups] == ["uploaded"] * 30, [u.error for u in ups]
        uploading, paths[:] = Counter(paths), []
        downs = await client.download([u.lfn for u in ups], tmp_path / "out", concurrency=8)
        assert [d.status for d in downs] == ["downloaded"] * 30, [d.error for d in downs]
    # One batch: one registration call before any byte moves, one finalisation call after them all.
    assert uploading["/files/register"] == 1 and uploading["/replicas/statuses"] == 1
    assert uploading["/replicas/status"] == uploading["/files"] == 0
    assert Counter(paths) == {"/ses": 1, "/files/lookup": 1}
    assert (tmp_path / "out" / "s29").read_bytes() == b"small" * 29


async def test_batches_cost_one_registration_and_one_finalisation_each_and_count_what_they_stored(
    api: RunningApi, live_ses: LiveSEs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataio.upload, "BATCH", 10)
    se = await live_ses.add("file")
    sources = small_files(tmp_path, 25, prefix="b", unit=b"batched")
    async with api.client() as client:
        paths = observe_paths(client)
        before = {u["se"]: u for u in await client.se_usage()}.get(se.name, {"replicas": 0, "bytes": 0})
        ups = await client.upload(sources, "/cta/batched/", se.name, concurrency=3)
        assert [u.status for u in ups] == ["uploaded"] * 25, [u.error for u in ups]
        calls = Counter(paths)
        again = await client.upload(sources, "/cta/batched/", se.name, concurrency=3)
        assert [u.status for u in again] == ["exists"] * 25
        stored = sum(len(b"batched") * index for index in range(25))
        assert await client.directory_usage("/cta/batched") == {"path": "/cta/batched", "files": 25, "bytes": stored}
        after = {u["se"]: u for u in await client.se_usage()}[se.name]
        assert (after["replicas"] - before["replicas"], after["bytes"] - before["bytes"]) == (25, stored)
        assert (await client.rebuild_usage(fix=False))["drifted"] == 0
        replicas = (await client.lookup_files([u.lfn for u in ups]))["successful"]
    assert calls["/files/register"] == 3 and calls["/replicas/statuses"] == 3
    assert {r["status"] for doc in replicas.values() for r in doc["replicas"]} == {"available"}
