"""The S3 server of the test bed stores bytes and gives them back."""

from __future__ import annotations

import os

from tests.fixtures.s3 import S3Endpoint


async def test_s3_server_round_trips_bytes(s3_server: S3Endpoint, s3_bucket: str) -> None:
    payload = os.urandom(4096)
    async with s3_server.client() as client:
        await client.put_object(Bucket=s3_bucket, Key="dir/object", Body=payload)
        response = await client.get_object(Bucket=s3_bucket, Key="dir/object")
        assert await response["Body"].read() == payload


async def test_each_test_gets_an_empty_bucket(s3_server: S3Endpoint, s3_bucket: str) -> None:
    async with s3_server.client() as client:
        listing = await client.list_objects_v2(Bucket=s3_bucket)
        assert listing.get("KeyCount", 0) == 0
