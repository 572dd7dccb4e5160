"""S3 SEs reached by clients without the SE's secrets, through URLs the server signs for one
replica and one method, given only to callers the catalogue lets read or write the file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from cairn.sdk import Client
from dataio.fsspec_cairn import CairnFileSystem
from kernel.errors import Conflict, Forbidden, NotFound
from storage_plugins.errors import NotSupported
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload
from tests.fixtures.s3 import S3Endpoint


async def _object_size(s3: S3Endpoint, url: str) -> int:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    async with s3.client() as client:
        head = await client.head_object(Bucket=bucket, Key=key)
    return int(head["ContentLength"])


async def test_a_client_without_s3_secrets_uploads_and_downloads_through_signed_urls(
    live_ses: LiveSEs, admin: Client, s3_server: S3Endpoint, payload: Callable[[int], Payload], tmp_path: Path
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    data = payload(20 << 20)
    [up] = await admin.upload([data.path], "/cta/f", se.name, credentials={})
    assert up.status == "uploaded", up.error
    assert up.url is not None and up.url.startswith("s3://")
    assert await _object_size(s3_server, up.url) == data.size
    [down] = await admin.download(["/cta/f"], tmp_path / "f", credentials={})
    assert (down.status, down.se) == ("downloaded", se.name), down.error
    assert (tmp_path / "f").read_bytes() == data.path.read_bytes()


async def test_the_signed_url_carries_a_signature_and_a_lifetime(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    await admin.upload([payload(10).path], "/cta/f", se.name, credentials={})
    answer = await admin.signed_url("/cta/f", se.name, "GET", lifetime_s=120)
    assert answer["url"].startswith("http://") and "X-Amz-Signature=" in answer["url"]
    assert "X-Amz-Expires=120" in answer["url"]


async def test_only_readers_get_urls_and_only_writers_of_a_copying_replica_get_put_urls(
    api: RunningApi, live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    await admin.upload([payload(10).path], "/cta/f", se.name, credentials={})
    with pytest.raises(Conflict, match="available"):  # its replica is available, not being written
        await admin.signed_url("/cta/f", se.name, "PUT")
    await admin.chmod("/cta/f", 0o660)
    async with api.client(api.token("bob", vo="km3net", groups=("km3net",))) as bob:
        with pytest.raises(Forbidden, match="/cta/f"):
            await bob.signed_url("/cta/f", se.name, "GET")
    with pytest.raises(NotFound, match="no replica on SE OTHER"):
        await admin.signed_url("/cta/f", "OTHER", "GET")


async def test_an_se_without_s3_gets_no_signed_url(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    se = await live_ses.add("file")
    await admin.upload([payload(10).path], "/cta/f", se.name)
    with pytest.raises(NotSupported, match=se.name):
        await admin.signed_url("/cta/f", se.name, "GET")


async def test_cairn_fsspec_reads_an_s3_replica_through_a_signed_url(
    api: RunningApi, live_ses: LiveSEs, admin: Client, tmp_path: Path
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    pd.DataFrame({"x": range(1000)}).to_parquet(tmp_path / "x.parquet")
    await admin.upload([tmp_path / "x.parquet"], "/cta/x.parquet", se.name, credentials={})
    fs = CairnFileSystem(api.url, api.admin_token, credentials={}, skip_instance_cache=True)
    read = await asyncio.to_thread(pd.read_parquet, "/cta/x.parquet", filesystem=fs)
    assert list(read["x"]) == list(range(1000))
