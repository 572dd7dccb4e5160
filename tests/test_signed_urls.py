"""S3 SEs reached by clients without the SE's secrets, through URLs the server signs for one
replica and one method, given only to callers the catalogue lets read or write the file."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pandas as pd
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from dataio.fsspec_cairn import CairnFileSystem
from dataio.signed_access import without_signature
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from storage_plugins.errors import ChecksumMismatch, NotSupported
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload
from tests.fixtures.s3 import S3Endpoint
from tests.fixtures.transfers import delete_removed_bytes


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


USER_SCOPES = ("catalogue.read", "catalogue.write")


def _sum(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


async def test_a_put_url_is_short_lived_and_signed_for_the_size_and_for_creating_only(
    api: RunningApi, live_ses: LiveSEs, s3_server: S3Endpoint, tmp_path: Path, database: AsyncDatabase[Document]
) -> None:
    """A URL cannot be revoked: kept after its file was removed, bob's PUT URL must not overwrite
    the object of alice's file registered later at the same LFN, nor store more than registered."""
    se = await live_ses.add("s3", secrets_on_server=True)
    bob_data, alice_data = b"bob's bytes", b"alice's precious bytes"
    async with api.client(api.token("bob", scopes=USER_SCOPES)) as bob:
        await bob.register_files([{"lfn": "/cta/f", "size": len(bob_data), "adler32": _sum(bob_data),
                                   "replicas": [{"se": se.name, "status": "copying"}]}])
        answer = await bob.signed_url("/cta/f", se.name, "PUT", lifetime_s=24 * 3600)
        with pytest.raises(InvalidInput, match="method"):  # no DELETE URL: the server deletes (discard)
            await bob.signed_url("/cta/f", se.name, "DELETE")
        await bob.remove_files(["/cta/f"], force=True)
    await delete_removed_bytes(database, api.settings)  # the reaper frees the path
    assert answer["expires_in"] == 600 and "X-Amz-Expires=600" in answer["url"]
    signed = parse_qs(urlsplit(answer["url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-length", "if-none-match"} <= set(signed)  # S3 refuses the URL without them
    assert answer["headers"] == {"If-None-Match": "*"}
    async with api.client(api.token("alice", scopes=USER_SCOPES)) as alice:
        await alice.register_files([{"lfn": "/cta/f", "size": len(alice_data), "adler32": _sum(alice_data),
                                     "mode": 0o644, "replicas": [{"se": se.name, "status": "copying"}]}])
        [up] = await alice.upload([_local(tmp_path, alice_data)], "/cta/f", se.name, credentials={})
        assert up.status == "uploaded", up.error
    async with aiohttp.ClientSession() as http:
        put = http.put(answer["url"], data=b"x" * len(bob_data), headers=answer["headers"])
        async with put as resp:
            assert resp.status == 412  # the object exists: not overwritten
    async with s3_server.client() as s3:
        bucket, key = up.url.removeprefix("s3://").split("/", 1)  # type: ignore[union-attr]
        assert await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read() == alice_data


async def test_a_get_url_reads_only_the_object_it_was_signed_for(
    api: RunningApi, live_ses: LiveSEs, tmp_path: Path, database: AsyncDatabase[Document]
) -> None:
    """Kept after alice's world-readable file was removed, bob's day-long GET URL read the object
    of carol's private file registered later at the same LFN (the path comes from the name)."""
    se = await live_ses.add("s3", secrets_on_server=True)
    alice_data, carol_data = b"alice's public bytes", b"carol's private bytes"
    async with api.client(api.token("alice", scopes=USER_SCOPES)) as alice:
        await alice.register_files([{"lfn": "/cta/f", "size": len(alice_data), "adler32": _sum(alice_data),
                                     "mode": 0o644, "replicas": [{"se": se.name, "status": "copying"}]}])
        [up] = await alice.upload([_local(tmp_path, alice_data)], "/cta/f", se.name, credentials={})
        assert up.status == "uploaded", up.error
        async with api.client(api.token("bob", scopes=USER_SCOPES)) as bob:
            answer = await bob.signed_url("/cta/f", se.name, "GET", lifetime_s=24 * 3600)
            async with aiohttp.ClientSession() as http, http.get(answer["url"], headers=answer["headers"]) as resp:
                assert (resp.status, await resp.read()) == (200, alice_data)
        await alice.remove_files(["/cta/f"], force=True)
    await delete_removed_bytes(database, api.settings)  # the reaper frees the path
    signed = parse_qs(urlsplit(answer["url"]).query)["X-Amz-SignedHeaders"][0].split(";")
    assert "if-match" in signed  # S3 refuses the URL without it
    assert set(answer["headers"]) == {"If-Match"}
    async with api.client(api.token("carol", scopes=USER_SCOPES)) as carol:
        await carol.register_files([{"lfn": "/cta/f", "size": len(carol_data), "adler32": _sum(carol_data),
                                     "mode": 0o600, "replicas": [{"se": se.name, "status": "copying"}]}])
        [up] = await carol.upload([_local(tmp_path, carol_data)], "/cta/f", se.name, credentials={})
        assert up.status == "uploaded", up.error
    async with aiohttp.ClientSession() as http, http.get(answer["url"], headers=answer["headers"]) as resp:
        assert resp.status == 412 and carol_data not in await resp.read()


async def test_discard_deletes_only_what_a_writer_of_a_copying_replica_wrote(
    api: RunningApi, live_ses: LiveSEs, s3_server: S3Endpoint
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    data = b"half an upload"
    async with api.client(api.token("bob", scopes=USER_SCOPES)) as bob, \
            api.client(api.token("carol", scopes=USER_SCOPES)) as carol:
        await bob.register_files([{"lfn": "/cta/f", "size": len(data), "adler32": _sum(data), "mode": 0o644,
                                   "replicas": [{"se": se.name, "status": "copying"}]}])
        url = (await bob.get_file("/cta/f"))["replicas"][0]["url"]
        bucket, key = url.removeprefix("s3://").split("/", 1)
        async with s3_server.client() as s3:
            await s3.put_object(Bucket=bucket, Key=key, Body=data)
        with pytest.raises(Forbidden):
            await carol.discard_stored("/cta/f", se.name)
        assert await _object_size(s3_server, url) == len(data)  # carol's call changed nothing
        assert (await bob.discard_stored("/cta/f", se.name))["discarded"] is True
        async with s3_server.client() as s3:
            listing = await s3.list_objects_v2(Bucket=bucket)
        assert [o["Key"] for o in listing.get("Contents", [])] == []
        assert (await bob.discard_stored("/cta/f", se.name))["discarded"] is True  # nothing there: fine
        await bob.set_replica_statuses([{"lfn": "/cta/f", "se": se.name, "status": "available",
                                         "expected": "copying"}])
        with pytest.raises(Conflict, match="copying"):
            await bob.discard_stored("/cta/f", se.name)


async def test_an_upload_writes_over_the_object_an_upload_that_died_left(
    api: RunningApi, live_ses: LiveSEs, s3_server: S3Endpoint, tmp_path: Path
) -> None:
    """The PUT URL only creates: the object a dead upload of this copying replica left is
    discarded through the server and the upload goes on."""
    se = await live_ses.add("s3", secrets_on_server=True)
    data = b"the real content"
    async with api.client(api.token("bob", scopes=USER_SCOPES)) as bob:
        await bob.register_files([{"lfn": "/cta/f", "size": len(data), "adler32": _sum(data),
                                   "replicas": [{"se": se.name, "status": "copying"}]}])
        url = (await bob.get_file("/cta/f"))["replicas"][0]["url"]
        bucket, key = url.removeprefix("s3://").split("/", 1)
        async with s3_server.client() as s3:
            await s3.put_object(Bucket=bucket, Key=key, Body=b"left by a dead upload")
        [up] = await bob.upload([_local(tmp_path, data)], "/cta/f", se.name, credentials={})
        assert up.status == "uploaded", up.error
    async with s3_server.client() as s3:
        assert await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read() == data


def _local(directory: Path, data: bytes) -> Path:
    path = directory / "f"
    path.write_bytes(data)
    return path


async def test_cairn_fsspec_names_a_corrupted_replica_read_through_a_signed_url_without_its_signature(
    api: RunningApi, live_ses: LiveSEs, admin: Client, s3_server: S3Endpoint, tmp_path: Path
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    (tmp_path / "a").write_bytes(b"the right bytes" * 100)
    [up] = await admin.upload([tmp_path / "a"], "/cta/a", se.name, credentials={})
    assert up.url is not None
    bucket, key = up.url.removeprefix("s3://").split("/", 1)
    async with s3_server.client() as client:
        await client.put_object(Bucket=bucket, Key=key, Body=b"the wrong bytes" * 100)
    fs = CairnFileSystem(api.url, api.admin_token, credentials={}, skip_instance_cache=True)
    with pytest.raises(OSError, match="corrupted replica") as caught:
        await asyncio.to_thread(fs.cat_file, "/cta/a")
    assert "X-Amz-" not in str(caught.value)


def test_an_error_about_a_signed_url_keeps_its_signature_nowhere() -> None:
    signed = "https://s3.example/b/k?X-Amz-Signature=abc"
    error = without_signature(ChecksumMismatch(signed, "00000001", "00000002"), signed)
    assert "X-Amz-" not in f"{error.to_json()} {error.url} {error.args}"
