"""What only the S3 plugin does: multipart uploads, presigned URLs, the adler32 tag."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from kernel.errors import NotFound, ServiceUnavailable
from storage_plugins.copy import copy
from storage_plugins.errors import ChecksumMismatch
from storage_plugins.posix import file_url
from storage_plugins.registry import plugin_for
from tests.fixtures.payloads import Payload
from tests.fixtures.s3 import S3Endpoint

MiB = 1 << 20


async def test_upload_above_the_threshold_goes_in_parts(
    s3_server: S3Endpoint, s3_bucket: str, payload: Callable[[int], Payload]
) -> None:
    options = s3_server.options(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    data = payload(12 * MiB)
    written = await plugin_for(f"s3://{s3_bucket}/", options).put(data.path, f"s3://{s3_bucket}/big")
    assert written.adler32 == data.adler32
    async with s3_server.client() as client:
        head = await client.head_object(Bucket=s3_bucket, Key="big")
        tags = await client.get_object_tagging(Bucket=s3_bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part upload
    assert head["ContentLength"] == 12 * MiB
    assert {"Key": "adler32", "Value": data.adler32} in tags["TagSet"]


async def test_upload_below_the_threshold_is_one_put(
    s3_server: S3Endpoint, s3_bucket: str, payload: Callable[[int], Payload]
) -> None:
    data = payload(MiB)
    await plugin_for(f"s3://{s3_bucket}/", s3_server.options()).put(data.path, f"s3://{s3_bucket}/small")
    async with s3_server.client() as client:
        head = await client.head_object(Bucket=s3_bucket, Key="small")
    assert "-" not in head["ETag"]


async def test_presigned_urls_let_a_plain_http_client_write_and_read(
    s3_server: S3Endpoint, s3_bucket: str
) -> None:
    plugin, url = plugin_for(f"s3://{s3_bucket}/", s3_server.options()), f"s3://{s3_bucket}/shared"
    put_url = await plugin.signed_url(url, method="PUT", lifetime_s=300)
    get_url = await plugin.signed_url(url, lifetime_s=300)
    async with aiohttp.ClientSession() as session:
        async with session.put(put_url, data=b"via presigned PUT") as response:
            assert response.status == 200
        async with session.get(get_url) as response:
            assert await response.read() == b"via presigned PUT"
    # moto does not enforce signatures, so the time limit is checked where it is carried.
    assert "X-Amz-Expires=300" in get_url and "X-Amz-Signature=" in get_url


async def test_a_corrupted_object_is_caught_by_its_adler32(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    plugin, url = plugin_for(f"s3://{s3_bucket}/", s3_server.options()), f"s3://{s3_bucket}/f"
    good = await plugin.write(url, _chunks(b"the right bytes"))
    async with s3_server.client() as client:  # bit rot behind the plugin's back, stale tag kept
        await client.put_object(
            Bucket=s3_bucket, Key="f", Body=b"the wrong bytes", Tagging=f"adler32={good.adler32}"
        )
    with pytest.raises(ChecksumMismatch) as caught:
        await plugin.get(url, tmp_path / "f", expected_adler32=good.adler32)
    assert url in caught.value.message
    dest = file_url(tmp_path / "copy")
    with pytest.raises(ChecksumMismatch):
        await copy(url, dest, source_options={"s3": s3_server.options()}, expected_adler32=good.adler32)
    assert not (tmp_path / "copy").exists()


async def test_missing_bucket_is_not_found(s3_server: S3Endpoint) -> None:
    with pytest.raises(NotFound) as caught:
        await plugin_for("s3://no-such-bucket/", s3_server.options()).stat("s3://no-such-bucket/k")
    assert "s3://no-such-bucket/k" in caught.value.message


async def test_unreachable_endpoint_is_service_unavailable(s3_server: S3Endpoint) -> None:
    from cairn.embedded_db import free_port

    closed = S3Endpoint(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceUnavailable) as caught:
        await plugin_for("s3://b/", closed.options(connect_timeout_s=2)).stat("s3://b/k")
    assert "s3://b/k" in caught.value.message


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
