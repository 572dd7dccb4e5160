"""`POST /storage/discard` deletes the object of a `copying` replica only for the upload that
holds it (its `writer` token, as `/replicas/hold` and `/replicas/undo` take it), or, for a caller
naming none, only when no writer holds it.

Before, the route checked the caller's w on the file and the replica `copying`, not which upload
held it: anyone with w on a file deleted the object another user's upload had written, between
its write and its flip (the flip then made `available` a replica with nothing on storage)."""

from __future__ import annotations

import uuid
import zlib

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.upload_leases import hold_for_transfers
from catalogue.writer_tokens import IN_PROGRESS
from kernel.db import Document
from kernel.errors import Conflict
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.s3 import S3Endpoint

USER_SCOPES = ("catalogue.read", "catalogue.write")


async def _objects(s3: S3Endpoint, url: str) -> list[str]:
    bucket, _ = url.removeprefix("s3://").split("/", 1)
    async with s3.client() as client:
        listing = await client.list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listing.get("Contents", [])]


async def test_discard_spares_the_object_of_a_replica_another_upload_holds(
    api: RunningApi, live_ses: LiveSEs, s3_server: S3Endpoint
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    data = b"bob's whole upload, not flipped yet"
    bob_writer, carol_writer = uuid.uuid4().hex, uuid.uuid4().hex
    async with api.client(api.token("bob", scopes=USER_SCOPES)) as bob, \
            api.client(api.token("carol", scopes=USER_SCOPES)) as carol:
        await bob.register_files([{"lfn": "/cta/f", "size": len(data), "adler32": f"{zlib.adler32(data):08x}",
                                   "mode": 0o666, "replicas": [{"se": se.name, "status": "copying"}]}])
        assert "/cta/f" in (await bob.hold_replicas(bob_writer, se.name, ["/cta/f"]))["successful"]
        url = (await bob.get_file("/cta/f"))["replicas"][0]["url"]
        bucket, key = url.removeprefix("s3://").split("/", 1)
        async with s3_server.client() as s3:
            await s3.put_object(Bucket=bucket, Key=key, Body=data)
        for writer in (None, carol_writer):  # carol may write the file (mode 666), not bob's upload
            with pytest.raises(Conflict, match=IN_PROGRESS):
                await carol.discard_stored("/cta/f", se.name, writer)
        with pytest.raises(Conflict, match=IN_PROGRESS):
            await bob.discard_stored("/cta/f", se.name)  # naming no upload: not the holder's either
        assert await _objects(s3_server, url) == [key]  # before: carol's first call deleted it
        assert (await bob.discard_stored("/cta/f", se.name, bob_writer))["discarded"] is True
        assert await _objects(s3_server, url) == []


async def test_discard_spares_the_object_a_transfer_is_copying(
    api: RunningApi, live_ses: LiveSEs, s3_server: S3Endpoint, database: AsyncDatabase[Document]
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    data = b"a transfer's copy"
    async with api.client(api.token("bob", scopes=USER_SCOPES)) as bob:
        await bob.register_files([{"lfn": "/cta/t", "size": len(data), "adler32": f"{zlib.adler32(data):08x}",
                                   "mode": 0o644, "replicas": [{"se": se.name, "status": "copying"}]}])
        assert not await hold_for_transfers(database, [("/cta/t", se.name)])
        url = (await bob.get_file("/cta/t"))["replicas"][0]["url"]
        bucket, key = url.removeprefix("s3://").split("/", 1)
        async with s3_server.client() as s3:
            await s3.put_object(Bucket=bucket, Key=key, Body=data)
        with pytest.raises(Conflict, match="transfer"):
            await bob.discard_stored("/cta/t", se.name, uuid.uuid4().hex)
        assert await _objects(s3_server, url) == [key]
