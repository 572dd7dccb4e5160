"""The CLI prints large listings as they arrive (a JSON array written item by item, a table
row by row) and an API that goes silent is a clear error, not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from cairn.cli.output import CHUNK
from cairn.embedded_db import free_port
from cairn.sdk import Client
from kernel.errors import ServiceUnavailable
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli

ENTRIES = CHUNK * 2 + 37  # several chunks of output


@pytest.fixture
async def big_directory(admin: Client) -> list[str]:
    names = [f"f{i:05d}.root" for i in range(ENTRIES)]
    outcome = await admin.register_files([{"lfn": f"/cta/big/{n}", "size": 1, "adler32": "00000001"} for n in names])
    assert not outcome["failed"]
    return names


async def test_ls_json_is_one_array_of_every_entry_in_order(api: RunningApi, big_directory: list[str]) -> None:
    listed = await run_cli(api.url, api.admin_token, "ls", "/cta/big", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == big_directory
    parent = await run_cli(api.url, api.admin_token, "ls", "/cta", "--json")
    assert [e["name"] for e in json.loads(parent.stdout)] == ["big"]


async def test_ls_table_prints_a_header_then_every_entry_once(api: RunningApi, big_directory: list[str]) -> None:
    listed = await run_cli(api.url, api.admin_token, "ls", "/cta/big")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["MODE", "OWNER", "GROUP", "SIZE", "MODIFIED", "NAME"]
    assert [line.split()[-1] for line in lines[1:]] == big_directory
    assert all(line.startswith("-rw") for line in lines[1:])


async def test_find_table_streams_every_match(api: RunningApi, big_directory: list[str]) -> None:
    found = await run_cli(api.url, api.admin_token, "find", "size=1", "--path", "/cta/big")
    assert found.returncode == 0, found.stderr
    assert [line.split()[0] for line in found.stdout.splitlines()[1:]] == [f"/cta/big/{n}" for n in big_directory]
    assert f"{ENTRIES} file(s)" in found.stderr



@contextlib.asynccontextmanager
async def listing_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A loopback HTTP server answering the API's streamed listing with `handler`; its base URL."""
    app = web.Application()
    app.router.add_get("/api/v1/namespace/ls/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()

@pytest.fixture
async def silent_api() -> AsyncIterator[str]:
    """An HTTP server that starts an NDJSON answer, sends one line, then says nothing."""

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"name": "first", "type": "file", "mode": 420}\n')
        with contextlib.suppress(TimeoutError):  # silent until the test is over, then gone at once
            await asyncio.wait_for(over.wait(), 30)
        return response

    over = asyncio.Event()
    async with listing_server(stall) as url:
        try:
            yield url
        finally:
            over.set()


@pytest.fixture
async def cut_api() -> AsyncIterator[str]:
    """An HTTP server whose NDJSON listing stops with the error line the API writes when a stream
    fails after its headers went out."""

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"name":"first","type":"file","mode":420}\n'
                             b'{"name":"second","type":"file","mode":420}\n'
                             b'{"error":{"code":"service_unavailable","message":"lost: AutoReconnect"}}\n')
        await response.write_eof()
        return response

    async with listing_server(cut) as url:
        yield url


async def test_a_stream_cut_short_raises_its_error_after_the_entries_before_it(cut_api: str) -> None:
    async with Client(cut_api, "token") as client:
        seen = []
        with pytest.raises(ServiceUnavailable, match="AutoReconnect"):
            async for entry in client.ls("/"):
                seen.append(entry["name"])
        assert seen == ["first", "second"]
        lines: list[bytes] = []
        with pytest.raises(ServiceUnavailable, match="AutoReconnect"):
            async for chunk in client.ls_lines("/"):
                lines += chunk
        assert [json.loads(line)["name"] for line in lines] == ["first", "second"]


async def test_the_cli_reports_a_stream_cut_short_as_an_error(cut_api: str) -> None:
    done = await run_cli(cut_api, "token", "ls", "/", "--json")
    assert done.returncode == 3
    assert "AutoReconnect" in done.stderr and "Traceback" not in done.stderr
    assert '"second"' in done.stdout and not done.stdout.rstrip().endswith("]")


async def test_a_silent_stream_is_a_service_unavailable_error(silent_api: str) -> None:
    async with Client(silent_api, "token", timeout_s=0.5) as client:
        seen = []
        with pytest.raises(ServiceUnavailable, match=r"sent nothing for 0\.5 s"):
            async for entry in client.ls("/"):
                seen.append(entry["name"])
    assert seen == ["first"]


async def test_the_cli_reports_a_silent_api_without_a_traceback(silent_api: str) -> None:
    done = await run_cli(silent_api, "token", "ls", "/", "--json", env={"CAIRN_API_TIMEOUT": "0.5"})
    assert done.returncode == 3
    assert "sent nothing for 0.5 s" in done.stderr and "Traceback" not in done.stderr
