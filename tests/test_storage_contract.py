"""What every storage plugin does the same way, checked on each plugin against its real server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kernel.errors import NotFound
from storage_plugins.errors import ChecksumMismatch
from tests.fixtures.endpoints import Endpoint
from tests.fixtures.payloads import BIG_SIZE, Payload, adler32_of_file


@pytest.mark.parametrize("size", [0, 1, BIG_SIZE], ids=["0B", "1B", "100MiB"])
async def test_put_then_get_round_trips_bytes_and_adler32(
    endpoint: Endpoint, payload: Callable[[int], Payload], size: int, tmp_path: Path
) -> None:
    data = payload(size)
    plugin, url = endpoint.plugin(), endpoint.url("dir/file")
    written = await plugin.put(data.path, url)
    assert (written.size, written.adler32) == (size, data.adler32)
    assert (await plugin.stat(url)).size == size
    assert await plugin.checksum(url) == data.adler32
    back = tmp_path / "back"
    got = await plugin.get(url, back, expected_adler32=data.adler32)
    assert (got.size, got.adler32) == (size, data.adler32)
    assert back.stat().st_size == size and adler32_of_file(back) == data.adler32


async def test_streams_100_mib_each_way_in_bounded_memory(
    endpoint: Endpoint, payload: Callable[[int], Payload]
) -> None:
    data = payload(BIG_SIZE)
    args = [endpoint.url("streamed"), json.dumps(endpoint.options), str(data.path)]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fixtures.stream_probe", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    assert child.returncode == 0
    result = json.loads(out)
    assert result["written"] == result["read"] == data.adler32
    assert result["size"] == data.size
    # The S3 plugin holds at most the multipart threshold plus max_concurrency parts, each twice
    # while aiohttp sends it (16 + 2 x 4 x 8 MiB here), whatever the file size; the others a chunk
    # or two.
    bound = (16 + 2 * 4 * 8 + 16) << 20 if endpoint.kind == "s3" else 16 << 20
    assert result["peak"] < bound, f"peak {result['peak'] >> 20} MiB while streaming 100 MiB"


async def test_read_of_a_range(endpoint: Endpoint) -> None:
    plugin, url = endpoint.plugin(), endpoint.url("ranged")
    await plugin.write(url, _chunks(b"0123456789"), size=10)
    assert b"".join([chunk async for chunk in plugin.read(url, offset=3, length=4)]) == b"3456"
    assert b"".join([chunk async for chunk in plugin.read(url, offset=7)]) == b"789"


async def test_list_shows_files_and_directories(endpoint: Endpoint) -> None:
    plugin = endpoint.plugin()
    await plugin.write(endpoint.url("a"), _chunks(b"xx"), size=2)
    await plugin.write(endpoint.url("sub/b"), _chunks(b"yyy"), size=3)
    entries = {entry.url.rsplit("/", 1)[-1]: entry for entry in await plugin.list(endpoint.base)}
    assert set(entries) == {"a", "sub"}
    assert (entries["a"].size, entries["a"].is_dir) == (2, False)
    assert entries["sub"].is_dir
    assert (await plugin.stat(endpoint.url("sub"))).is_dir


async def test_walk_streams_every_file_below_in_string_order(endpoint: Endpoint) -> None:
    plugin = endpoint.plugin()
    # "a-b" sorts before "a/x" as a string although the directory "a" comes first by name
    for name in ("a/x", "a-b", "a/y/z", "b", "a.c/q"):
        await plugin.write(endpoint.url(name), _chunks(b"12"), size=2)
    walked = [entry async for entry in plugin.walk(endpoint.base)]
    names = [entry.url[len(endpoint.base.rstrip("/")) + 1:] for entry in walked]
    assert names == sorted(["a/x", "a-b", "a/y/z", "b", "a.c/q"]) == ["a-b", "a.c/q", "a/x", "a/y/z", "b"]
    assert {entry.size for entry in walked} == {2} and all(entry.mtime for entry in walked)


async def test_delete_removes_and_then_the_file_is_missing(endpoint: Endpoint) -> None:
    plugin, url = endpoint.plugin(), endpoint.url("gone")
    await plugin.write(url, _chunks(b"bye"), size=3)
    assert await plugin.exists(url)
    await plugin.delete(url)
    assert not await plugin.exists(url)


async def test_delete_many_removes_every_file_and_counts_one_already_gone_as_removed(endpoint: Endpoint) -> None:
    plugin = endpoint.plugin()
    urls = [endpoint.url(f"many/f{i}") for i in range(5)]
    for url in urls:
        await plugin.write(url, _chunks(b"x"), size=1)
    assert await plugin.delete_many([*urls, endpoint.url("many/never-there")], concurrency=2) == {}
    assert [await plugin.exists(url) for url in urls] == [False] * 5


async def test_missing_file_is_not_found_naming_the_url(endpoint: Endpoint, tmp_path: Path) -> None:
    plugin, url = endpoint.plugin(), endpoint.url("missing")
    for attempt in (
        plugin.stat(url),
        plugin.delete(url),
        plugin.get(url, tmp_path / "x"),
        _drain(plugin.read(url)),
    ):
        with pytest.raises(NotFound) as caught:
            await attempt
        assert url in caught.value.message


async def test_get_with_a_wrong_expected_checksum_fails_and_leaves_no_file(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    plugin, url = endpoint.plugin(), endpoint.url("f")
    await plugin.write(url, _chunks(b"payload"), size=7)
    with pytest.raises(ChecksumMismatch) as caught:
        await plugin.get(url, tmp_path / "copy", expected_adler32="00000001")
    assert caught.value.expected == "00000001" and url in caught.value.message
    assert not (tmp_path / "copy").exists()


async def test_put_with_a_wrong_expected_checksum_fails_and_stores_nothing(
    endpoint: Endpoint, payload: Callable[[int], Payload]
) -> None:
    plugin, url = endpoint.plugin(), endpoint.url("dir/put")
    with pytest.raises(ChecksumMismatch) as caught:
        await plugin.put(payload(1).path, url, expected_adler32="00000001")
    assert caught.value.expected == "00000001" and url in caught.value.message
    assert not await plugin.exists(url)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _drain(stream: AsyncIterator[bytes]) -> None:
    async for _ in stream:
        pass
