"""An HTTP third-party copy carries the passive endpoint's token (TransferHeaderAuthorization): the
COPY's redirects are followed a bounded number of times, to another server too (a head node
sending it to a disk server), but the token is never sent over plain http to another machine."""

from __future__ import annotations

import pytest
from aiohttp import web

from storage_plugins.copy import copy
from storage_plugins.errors import NotSupported, StorageError
from storage_plugins.webdav import WebDavPlugin
from tests.fixtures.http_servers import StartServer

TOKEN = "SOURCE-SE-SECRET-TOKEN"
DONE = b"Perf Marker\nTimestamp: 1\nStripe Index: 0\nStripe Bytes Transferred: 7\nTotal Stripe Count: 1\nEnd\n" \
       b"success: Created\n"


async def test_a_copy_redirected_to_plain_http_on_another_machine_fails_and_the_token_goes_nowhere(
    http_server: StartServer,
) -> None:
    async def destination(request: web.Request) -> web.Response:
        if request.method == "MKCOL":
            return web.Response(status=201)
        raise web.HTTPTemporaryRedirect(f"http://elsewhere.example:1{request.path}")  # would be resolved, then sent

    dest = await http_server(destination)
    with pytest.raises(StorageError, match="redirected to plain http on another machine"):
        await copy("https://source.example:1/data/f", f"{dest}/data/f", source_options={"https": {"token": TOKEN}},
                   expected_adler32="00000001", timeout_s=10)


async def test_a_copy_redirected_to_a_disk_server_is_followed_with_the_token(http_server: StartServer) -> None:
    seen: list[str | None] = []

    async def disk_server(request: web.Request) -> web.Response:
        seen.append(request.headers.get("TransferHeaderAuthorization"))
        return web.Response(status=202, body=DONE)

    other = await http_server(disk_server)

    async def head_node(request: web.Request) -> web.Response:
        if request.method == "MKCOL":
            return web.Response(status=201)
        raise web.HTTPTemporaryRedirect(f"{other}{request.path}")

    dest = await http_server(head_node)
    async with WebDavPlugin() as plugin:
        moved = await plugin.third_party_copy("https://source.example:1/data/f", f"{dest}/data/f",
                                              remote_token=TOKEN, timeout_s=10)
    assert (moved, seen) == (7, [f"Bearer {TOKEN}"])


async def test_a_copy_redirected_within_its_server_is_followed_with_the_token(http_server: StartServer) -> None:
    tokens: list[str | None] = []

    async def destination(request: web.Request) -> web.Response:
        if request.method == "MKCOL":
            return web.Response(status=201)
        tokens.append(request.headers.get("TransferHeaderAuthorization"))
        if not request.path.startswith("/disk7/"):
            raise web.HTTPTemporaryRedirect(f"/disk7{request.path}")  # relative, as EOS and dCache may answer
        return web.Response(status=202, body=DONE)

    dest = await http_server(destination)
    async with WebDavPlugin() as plugin:
        moved = await plugin.third_party_copy("https://source.example:1/data/f", f"{dest}/data/f",
                                              remote_token=TOKEN, timeout_s=10)
    assert (moved, tokens) == (7, [f"Bearer {TOKEN}"] * 2)


async def test_a_copy_redirected_without_end_gives_up(http_server: StartServer) -> None:
    hops: list[str] = []

    async def destination(request: web.Request) -> web.Response:
        if request.method == "MKCOL":
            return web.Response(status=201)
        hops.append(request.path)
        raise web.HTTPFound(f"/again{request.path}")

    dest = await http_server(destination)
    async with WebDavPlugin() as plugin:
        with pytest.raises(StorageError, match="redirected more than"):
            await plugin.third_party_copy("https://source.example:1/data/f", f"{dest}/data/f", timeout_s=10)
    assert len(hops) == 6


async def test_a_token_is_not_sent_over_plain_http_to_another_machine() -> None:
    async with WebDavPlugin() as plugin:
        with pytest.raises(NotSupported, match="plain http"):
            await plugin.third_party_copy("https://source.example:1/data/f", "http://dest.example:1/data/f",
                                          remote_token=TOKEN, timeout_s=10)
