"""A client that trickles a request does not hold the server's connections and handlers for as
long as it likes: a body that does not arrive within `body_read_s` is a 408 (and nothing is
written), a connection whose request's headers do not complete is closed after `keepalive_s`."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi

LIMIT_S = 1.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"body_read_s": LIMIT_S, "keepalive_s": LIMIT_S})


async def opened(api: RunningApi) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(api.url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def test_a_body_that_does_not_arrive_in_time_is_408_and_writes_nothing(
    api: RunningApi, catalogue_db: AsyncDatabase[Document]
) -> None:
    reader, writer = await opened(api)
    body = json.dumps({"files": [{"lfn": "/cta/slow.root", "size": 1, "adler32": "00000001"}]}).encode()
    writer.write(b"POST /api/v1/files/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {api.admin_token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body[:10])
    await writer.drain()
    began = time.monotonic()
    status_line = await asyncio.wait_for(reader.readline(), 10 * LIMIT_S)
    waited = time.monotonic() - began
    _, _, rest = (status_line + await asyncio.wait_for(reader.read(4096), 5)).partition(b"\r\n\r\n")
    writer.write(body[10:])  # the rest, too late
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert LIMIT_S * 0.9 <= waited < 5 * LIMIT_S, waited
    assert json.loads(rest)["code"] == "request_timeout"
    assert await catalogue_db["files"].count_documents({}) == 0


async def test_a_connection_whose_headers_never_complete_is_closed(api: RunningApi) -> None:
    conns = [await opened(api) for _ in range(5)]
    for _, writer in conns:
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
    began = time.monotonic()
    for reader, writer in conns:
        assert await asyncio.wait_for(reader.read(1), 10 * LIMIT_S) == b""  # closed by the server
        writer.close()
    assert time.monotonic() - began < 5 * LIMIT_S


async def test_a_prompt_client_is_answered_as_before(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    async with api.client() as client:
        result = await client.register_files([{"lfn": "/cta/quick.root", "size": 1, "adler32": "00000001"}])
        assert result["failed"] == {}
        await asyncio.sleep(1.5 * LIMIT_S)  # the SDK's pooled connection closed meanwhile: it opens another
        assert (await client.stat("/cta/quick.root"))["size"] == 1
