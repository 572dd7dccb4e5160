"""A storage server (buggy, hostile, or one a redirect chose) does not decide how much Cairn reads:
an error answer's body, a PROPFIND answer, a third-party copy's progress and a file's bytes are read
only as far as they can be of use, then refused. Each server below would send FLOOD bytes."""

from __future__ import annotations

import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from cairn.sdk import Client
from catalogue.storage_elements import Protocol, StorageElement
from kernel.errors import CairnError
from storage_plugins.copy import copy
from storage_plugins.errors import StorageError
from storage_plugins.webdav import WebDavPlugin
from tests.fixtures.http_servers import Handler, StartServer

FLOOD = 64 << 20
# What the flooding server may get written before the client stops it: what the client read,
# plus the loopback connection's buffers.
READ_BOUND = 16 << 20
PIECE = b"x" * (64 << 10)
MARKER = b"Perf Marker\nTimestamp: 1\nStripe Index: 0\nStripe Bytes Transferred: 7\nTotal Stripe Count: 1\nEnd\n"
LISTING_HEAD = b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">'


@dataclass
class Flood:
    """A handler answering with status, head, then piece after piece up to FLOOD bytes."""

    status: int
    head: bytes = b""
    piece: bytes = PIECE
    sent: int = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.method == "MKCOL":
            return web.Response(status=201)
        response = web.StreamResponse(status=self.status)  # no Content-Length: chunked
        await response.prepare(request)
        await response.write(self.head)
        while self.sent < FLOOD:
            await response.write(self.piece)
            self.sent += len(self.piece)
        return response


async def served(http_server: StartServer, handler: Handler) -> str:
    return f"{await http_server(handler)}/se/f"


async def test_an_error_answer_is_read_no_further_than_its_first_kib(http_server: StartServer) -> None:
    flood = Flood(500)
    url = await served(http_server, flood)
    async with WebDavPlugin() as plugin:
        with pytest.raises(StorageError, match="HTTP 500: xxxx"):
            await plugin.delete(url)
    assert flood.sent < READ_BOUND


async def test_a_propfind_answer_without_entries_is_refused_after_a_mib(http_server: StartServer) -> None:
    flood = Flood(207, LISTING_HEAD + b"<!--")
    url = await served(http_server, flood)
    async with WebDavPlugin() as plugin:
        with pytest.raises(StorageError, match="no entry"):
            await plugin.stat(url)
    assert flood.sent < READ_BOUND


def entry(index: int) -> bytes:
    return (f"<D:response><D:href>/se/d/f{index}</D:href><D:propstat><D:prop><D:getcontentlength>{index}"
            "</D:getcontentlength><D:resourcetype/></D:prop></D:propstat></D:response>").encode()


async def test_a_propfind_answer_is_refused_past_max_propfind_bytes(http_server: StartServer) -> None:
    flood = Flood(207, LISTING_HEAD, b"".join(entry(i) for i in range(400)))
    url = await served(http_server, flood)
    async with WebDavPlugin({"max_propfind_bytes": 1 << 20}) as plugin:
        with pytest.raises(StorageError, match="larger than 1048576 bytes"):
            await plugin.list(url)
    assert flood.sent < READ_BOUND


async def test_a_large_listing_within_the_bounds_is_read_whole(http_server: StartServer) -> None:
    collection = b"<D:resourcetype><D:collection/></D:resourcetype>"
    directory = entry(0).replace(b"/se/d/f0", b"/se/d").replace(b"<D:resourcetype/>", collection)
    listing = LISTING_HEAD + directory + b"".join(entry(i) for i in range(1, 20_001)) + b"</D:multistatus>"

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=207, body=listing)

    base = await http_server(answer)
    async with WebDavPlugin() as plugin:
        found = await plugin.list(f"{base}/se/d")
    assert len(found) == 20_000 and sum(e.size for e in found) == sum(range(1, 20_001))


def streaming(body: bytes) -> Handler:
    """A COPY answer streaming body in 64 KiB writes (MKCOL: created)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "MKCOL":
            return web.Response(status=201)
        response = web.StreamResponse(status=202)
        await response.prepare(request)
        for start in range(0, len(body), 1 << 16):
            await response.write(body[start:start + (1 << 16)])
        return response

    return handler


async def copied_with_peak(http_server: StartServer, body: bytes) -> tuple[int, int]:
    """A third-party copy whose active endpoint streams body: the bytes it reported moved, and
    the most memory Python held meanwhile."""
    base = await http_server(streaming(body))
    async with WebDavPlugin() as plugin:
        tracemalloc.start()
        try:
            moved = await plugin.third_party_copy(f"{base}/src/f", f"{base}/dst/f", timeout_s=60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return moved, peak


async def test_a_third_party_copys_progress_markers_are_not_all_kept(http_server: StartServer) -> None:
    moved, peak = await copied_with_peak(http_server, MARKER * 30_000 + b"success: Created\n")
    assert moved == 7 and peak < (2 << 20), f"{peak >> 20} MiB held for 30000 markers"


async def test_an_endless_progress_line_is_cut_and_the_verdict_still_read(http_server: StartServer) -> None:
    # 4 MiB without a newline (aiohttp's line reader gave up at 128 KiB with a ValueError), then
    # a marker whose numbers are not numbers, then the verdict.
    garbled = MARKER.replace(b"Timestamp: 1", b"Timestamp: soon").replace(b"Index: 0", b"Index: " + b"9" * 5000)
    body = MARKER + b"x" * (4 << 20) + b"\n" + garbled + b"success: Created\n"
    moved, peak = await copied_with_peak(http_server, body)
    assert moved == 7 and peak < (2 << 20), f"{peak >> 20} MiB held for one 4 MiB line"


async def test_an_endless_failure_line_fails_the_copy_with_its_start(http_server: StartServer) -> None:
    body = MARKER + b"failure: disk full " + b"y" * (1 << 20) + b"\n"
    base = await http_server(streaming(body))
    async with WebDavPlugin() as plugin:
        with pytest.raises(CairnError) as failed:
            await plugin.third_party_copy(f"{base}/src/f", f"{base}/dst/f", timeout_s=60)
    assert "disk full" in failed.value.message and len(failed.value.message) < (10 << 10)


async def test_a_copy_stops_reading_a_source_that_sends_more_than_the_file(
    http_server: StartServer, tmp_path: Path
) -> None:
    flood = Flood(200)
    url = await served(http_server, flood)
    dest = tmp_path / "dst" / "f"
    with pytest.raises(CairnError, match="more than"):
        await copy(url, dest.as_uri(), expected_adler32="00000001", expected_size=1000, timeout_s=10)
    assert flood.sent < READ_BOUND and not dest.exists()


async def test_a_download_stops_reading_a_replica_that_sends_more_than_the_file(
    http_server: StartServer, admin: Client, tmp_path: Path
) -> None:
    flood = Flood(200)
    port = int((await http_server(flood)).rsplit(":", 1)[1])
    se = StorageElement(name="FLOODING", site="S", protocols=[Protocol(scheme="http", host="127.0.0.1", port=port,
                                                                          prefix="/se")])
    await admin.put_se(se.model_dump(mode="json"))
    result = await admin.register_files([{"lfn": "/f", "size": 1000, "adler32": f"{zlib.adler32(b'x' * 1000):08x}",
                                          "replicas": [{"se": "FLOODING"}]}])
    assert not result["failed"], result
    [outcome] = await admin.download(["/f"], tmp_path / "f", credentials={})
    assert outcome.status == "failed" and "more than 1000 bytes" in str(outcome.error), outcome.error
    assert flood.sent < READ_BOUND and not (tmp_path / "f").exists()
