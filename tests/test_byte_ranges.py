"""A ranged read gives the bytes asked for whatever the server answers: HTTP lets a WebDAV or S3
server ignore Range and send the whole file (200), and a server may send more than asked; before,
a read at an offset then gave bytes from the start of the file (fsspec's `cairn://` partial reads
are covered by no checksum)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from storage_plugins.byte_ranges import within
from storage_plugins.errors import StorageError
from storage_plugins.s3 import S3Plugin
from storage_plugins.webdav import WebDavPlugin

BODY = bytes(range(256)) * 40  # 10240 bytes, each position telling where it is


def propfind_answer() -> web.Response:
    return web.Response(status=207, content_type="application/xml", text=(
        '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/f</D:href><D:propstat><D:prop>'
        f'<D:getcontentlength>{len(BODY)}</D:getcontentlength><D:resourcetype/></D:prop></D:propstat></D:response>'
        '</D:multistatus>'))


def whole_file(request: web.Request) -> web.Response:
    return web.Response(body=BODY)  # Range ignored, as HTTP allows


def too_much(request: web.Request) -> web.Response:
    start = int(request.headers["Range"].removeprefix("bytes=").split("-")[0])
    answered = f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"
    return web.Response(status=206, body=BODY[start:], headers={"Content-Range": answered})


def elsewhere(request: web.Request) -> web.Response:
    return web.Response(status=206, body=BODY[:4], headers={"Content-Range": f"bytes 0-3/{len(BODY)}"})


async def serve(get: Callable[[web.Request], web.Response]) -> tuple[web.AppRunner, str]:
    async def on_get(request: web.Request) -> web.Response:
        return get(request)

    async def on_propfind(request: web.Request) -> web.Response:
        return propfind_answer()

    app = web.Application()
    app.router.add_route("GET", "/f", on_get)
    app.router.add_route("PROPFIND", "/f", on_propfind)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/f"


async def read(url: str, offset: int, length: int | None) -> bytes:
    async with WebDavPlugin() as plugin:
        return b"".join([chunk async for chunk in plugin.read(url, offset=offset, length=length)])


@pytest.mark.parametrize("answer", [whole_file, too_much])
@pytest.mark.parametrize(("offset", "length"), [(10, 4), (5000, 3000), (0, 7), (10000, None), (1, None)])
async def test_a_webdav_read_gives_the_range_asked_for(
    answer: Callable[[web.Request], web.Response], offset: int, length: int | None
) -> None:
    runner, url = await serve(answer)
    try:
        expected = BODY[offset:] if length is None else BODY[offset:offset + length]
        assert await read(url, offset, length) == expected
    finally:
        await runner.cleanup()


async def test_a_range_starting_elsewhere_is_an_error() -> None:
    runner, url = await serve(elsewhere)
    try:
        with pytest.raises(StorageError, match="answered the range"):
            await read(url, 10, 4)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("offset", "length"), [(10, 4), (5000, None)])
async def test_an_s3_read_gives_the_range_asked_for_when_the_server_sends_the_whole_object(
    offset: int, length: int | None
) -> None:
    async def get_object(request: web.Request) -> web.Response:
        return web.Response(body=BODY, headers={"ETag": '"x"'})  # the whole object, Range ignored

    app = web.Application()
    app.router.add_route("GET", "/bucket/f", get_object)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    options = {"endpoint_url": f"http://127.0.0.1:{runner.addresses[0][1]}", "access_key": "a", "secret_key": "b"}
    try:
        async with S3Plugin(options) as plugin:
            got = b"".join([c async for c in plugin.read("s3://bucket/f", offset=offset, length=length)])
        assert got == (BODY[offset:] if length is None else BODY[offset:offset + length])
    finally:
        await runner.cleanup()


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize(("skip", "take"), [(0, None), (0, 1), (3, 2), (4, 5), (5, None), (2, 100), (9, 1), (10, 3)])
async def test_within_drops_the_head_and_stops_at_the_length(skip: int, take: int | None) -> None:
    data = b"0123456789"
    got = b"".join([c async for c in within(pieces(b"012", b"3", b"456789"), skip, take)])
    assert got == (data[skip:] if take is None else data[skip:skip + take])
