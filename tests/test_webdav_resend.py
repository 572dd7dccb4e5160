"""A WebDAV request that changes nothing is sent once more when the server breaks its connection
before answering (a pooled keep-alive connection the server had just closed); a request the server
may have acted on is not, and fails as the storage being unreachable."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from kernel.errors import ServiceUnavailable
from storage_plugins.base import FileInfo
from storage_plugins.webdav import WebDavPlugin

MULTISTATUS = (
    '<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/d/f</D:href>'
    "<D:propstat><D:prop><D:getcontentlength>7</D:getcontentlength><D:resourcetype/></D:prop>"
    "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"
)


class ResettingServer:
    """An HTTP server on loopback that resets the connection of its first `resets` requests
    (RST, no answer) after reading them whole, and answers the others (PROPFIND 207, PUT 201)."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.seen: list[str] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                method = lines[0].split()[0]
                sizes = [line.split(":", 1)[1] for line in lines if line.lower().startswith("content-length:")]
                await reader.readexactly(int(sizes[0]) if sizes else 0)
                self.seen.append(method)
                if len(self.seen) <= self.resets:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                status, body = ("207 Multi-Status", MULTISTATUS) if method == "PROPFIND" else ("201 Created", "")
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[ResettingServer]:
    resetting = ResettingServer(request.param)
    listening = await asyncio.start_server(resetting.handle, "127.0.0.1", 0)
    resetting.port = listening.sockets[0].getsockname()[1]
    try:
        yield resetting
    finally:
        listening.close()
        await listening.wait_closed()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def stat(server: ResettingServer) -> FileInfo:
    plugin = WebDavPlugin({"verify": False})
    try:
        return await plugin.stat(f"http://127.0.0.1:{server.port}/d/f")
    finally:
        await plugin.close()


@pytest.mark.parametrize("server", [1], indirect=True)
async def test_a_propfind_whose_connection_broke_before_an_answer_is_sent_once_more(server: ResettingServer) -> None:
    info = await stat(server)
    assert info.size == 7 and not info.is_dir
    assert server.seen == ["PROPFIND", "PROPFIND"]


@pytest.mark.parametrize("server", [2], indirect=True)
async def test_a_second_break_is_reported_not_retried_again(server: ResettingServer) -> None:
    with pytest.raises(ServiceUnavailable, match="cannot reach the storage"):
        await stat(server)
    assert server.seen == ["PROPFIND", "PROPFIND"]


@pytest.mark.parametrize("server", [1], indirect=True)
async def test_a_put_the_server_may_have_stored_is_not_sent_again(server: ResettingServer) -> None:
    plugin = WebDavPlugin({"verify": False})
    try:
        with pytest.raises(ServiceUnavailable, match="cannot reach the storage"):
            await plugin.write(f"http://127.0.0.1:{server.port}/d/f", _chunks(b"payload"), size=7)
    finally:
        await plugin.close()
    assert server.seen == ["PUT"]
