"""`s3://bucket/key` URLs on any S3 endpoint (AWS, MinIO, Ceph RGW, moto) through aioboto3.

Uploads above `multipart_threshold` go in parts of `multipart_chunksize`, at most
`max_concurrency` parts in flight, so memory stays bounded whatever the size (about
threshold + 2 x max_concurrency x chunksize: aiohttp copies each part while sending it). S3 has no adler32,
so the plugin records the one it computed while uploading as the object tag `adler32`; an
object written by anyone else has no tag and its checksum is computed by reading it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import Field

from kernel import lease_held
from kernel.errors import CairnError, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from storage_plugins.base import (
    CREATE_ONLY_HEADERS,
    DELETE_CONCURRENCY,
    FileInfo,
    PluginOptions,
    StoragePlugin,
    WriteResult,
)
from storage_plugins.byte_ranges import range_skip, within
from storage_plugins.checksums import Adler32
from storage_plugins.errors import StorageError

CHECKSUM_TAG = "adler32"
DELETE_OBJECTS = 1000  # keys per DeleteObjects request, S3's limit
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload"}
_FORBIDDEN = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_UNAVAILABLE = {"SlowDown", "ServiceUnavailable", "503", "InternalError", "500", "RequestTimeout"}


class S3Options(PluginOptions):
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str = "us-east-1"
    # MinIO, moto and most on-premises endpoints want path-style (http://host/bucket/key).
    path_style: bool = True
    multipart_threshold: int = Field(64 << 20, ge=1, le=5 << 40)
    multipart_chunksize: int = Field(16 << 20, ge=5 << 20, le=5 << 30)
    max_concurrency: int = Field(4, ge=1, le=64)
    connect_timeout_s: float = 10
    read_timeout_s: float = 120
    max_attempts: int = Field(2, ge=1, le=100)
    verify: bool | str = True


def split_s3_url(url: str) -> tuple[str, str]:
    """Bucket and key of an s3:// URL (the key may be empty for a bucket)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidInput(f"{url}: not an S3 URL (s3://bucket/key)")
    return parts.netloc, parts.path.lstrip("/")


def s3_error(url: str, exc: Exception) -> CairnError:
    """Map a botocore error to the kernel's classes, naming the URL."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or code
        if code in _NOT_FOUND:
            return NotFound(f"{url}: no such object or bucket ({code})")
        if code in _FORBIDDEN:
            return Forbidden(f"{url}: access denied ({code}: {message})")
        if code in _UNAVAILABLE:
            return ServiceUnavailable(f"{url}: S3 endpoint unavailable ({code}: {message})")
        return StorageError(f"{url}: S3 error {code}: {message}")
    if isinstance(exc, BotoConnectionError):
        return ServiceUnavailable(f"{url}: cannot reach the S3 endpoint ({exc})")
    return StorageError(f"{url}: {exc}")


@contextlib.contextmanager
def mapped_s3_errors(url: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(url, exc) from exc


async def _chunks(body: Any, size: int) -> AsyncIterator[bytes]:
    """An object's body (aiobotocore's stream) in chunks of at most size bytes."""
    while chunk := await body.read(size):
        yield chunk


async def _parts(buffer: bytearray, rest: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-chunk a stream into parts of exactly `size` bytes (the last may be shorter), starting
    with what is in buffer (consumed in place, not copied)."""
    async for chunk in rest:
        buffer += chunk
        while len(buffer) >= size:
            with memoryview(buffer) as view:
                part = bytes(view[:size])
            del buffer[:size]
            yield part
    if buffer:
        yield bytes(buffer)


class S3Plugin(StoragePlugin):
    """Objects in S3 buckets; directories are key prefixes ending in '/'."""

    schemes = ("s3",)
    has_directories = False
    server_checksum = True
    Options = S3Options
    options: S3Options

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        """The plugin's one aioboto3 client, opened on first use."""
        async with self._lock:
            if self._client is None:
                opts = self.options
                session = aioboto3.Session(
                    aws_access_key_id=opts.access_key,
                    aws_secret_access_key=opts.secret_key,
                    aws_session_token=opts.session_token,
                    region_name=opts.region,
                )
                config = Config(
                    s3={"addressing_style": "path" if opts.path_style else "auto"},
                    signature_version="s3v4",
                    connect_timeout=opts.connect_timeout_s,
                    read_timeout=opts.read_timeout_s,
                    retries={"max_attempts": opts.max_attempts, "mode": "standard"},
                    # Integrity is adler32's job; botocore's default CRC on every part costs CPU
                    # and copies, and older MinIO/moto versions reject the trailing checksums.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    max_pool_connections=max(10, opts.max_concurrency * 2),
                )
                self._client = await self._stack.enter_async_context(
                    session.client("s3", endpoint_url=opts.endpoint_url, config=config, verify=opts.verify)
                )
            return self._client

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def stat(self, url: str) -> FileInfo:
        bucket, key = split_s3_url(url)
        client = await self.client()
        if key and not key.endswith("/"):
            try:
                with mapped_s3_errors(url):
                    head = await client.head_object(Bucket=bucket, Key=key)
                return FileInfo(url, int(head["ContentLength"]), False, head["LastModified"].timestamp())
            except NotFound:
                pass  # perhaps a "directory": objects under key + "/"
        with mapped_s3_errors(url):
            prefix = key.rstrip("/") + "/" if key else ""
            listing = await client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if not key or listing.get("KeyCount", 0):
            return FileInfo(url, 0, True)
        raise NotFound(f"{url}: no such object")

    async def list(self, url: str) -> list[FileInfo]:
        bucket, key = split_s3_url(url)
        prefix = key.rstrip("/") + "/" if key else ""
        client = await self.client()
        entries: list[FileInfo] = []
        with mapped_s3_errors(url):
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    entries.append(FileInfo(f"s3://{bucket}/{common['Prefix'].rstrip('/')}", 0, True))
                for item in page.get("Contents", []):
                    if item["Key"] != prefix:
                        entries.append(
                            FileInfo(
                                f"s3://{bucket}/{item['Key']}",
                                int(item["Size"]),
                                False,
                                item["LastModified"].timestamp(),
                            )
                        )
        if not entries and prefix:
            await self.stat(url)
        return sorted(entries, key=lambda entry: entry.url)

    async def walk(self, url: str) -> AsyncIterator[FileInfo]:
        """Every object under a prefix, page by page: S3 lists keys in UTF-8 binary order already."""
        bucket, key = split_s3_url(url)
        prefix = key.rstrip("/") + "/" if key else ""
        client = await self.client()
        with mapped_s3_errors(url):
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        yield FileInfo(f"s3://{bucket}/{item['Key']}", int(item["Size"]), False,
                                       item["LastModified"].timestamp())

    async def read(self, url: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        bucket, key = split_s3_url(url)
        client = await self.client()
        request: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if offset or length is not None:
            if length == 0:
                return
            end = "" if length is None else str(offset + length - 1)
            request["Range"] = f"bytes={offset}-{end}"
        with mapped_s3_errors(url):
            response = await client.get_object(**request)
            body = response["Body"]
            try:
                skip = range_skip(url, offset, "ContentRange" in response, response.get("ContentRange")) \
                    if "Range" in request else 0
                async for chunk in within(_chunks(body, self.options.chunk_size), skip, length):
                    yield chunk
            finally:
                body.close()

    async def write(self, url: str, stream: AsyncIterable[bytes], *, size: int | None = None) -> WriteResult:
        bucket, key = split_s3_url(url)
        if not key or key.endswith("/"):
            raise InvalidInput(f"{url}: an object URL needs a key that does not end in '/'")
        client = await self.client()
        digest = Adler32()
        chunks = aiter(stream)
        head = bytearray()
        threshold = self.options.multipart_threshold
        async for chunk in chunks:
            digest.update(chunk)
            head += chunk
            if len(head) >= threshold:
                break
        if len(head) < threshold:
            with mapped_s3_errors(url):
                await client.put_object(
                    Bucket=bucket, Key=key, Body=bytes(head), Tagging=f"{CHECKSUM_TAG}={digest.hexdigest()}"
                )
            return WriteResult(url, digest.size, digest.hexdigest())
        await self._multipart(url, bucket, key, head, self._counted(chunks, digest))
        with mapped_s3_errors(url):
            await client.put_object_tagging(
                Bucket=bucket,
                Key=key,
                Tagging={"TagSet": [{"Key": CHECKSUM_TAG, "Value": digest.hexdigest()}]},
            )
        return WriteResult(url, digest.size, digest.hexdigest())

    @staticmethod
    async def _counted(chunks: AsyncIterator[bytes], digest: Adler32) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            digest.update(chunk)
            yield chunk

    async def _multipart(
        self, url: str, bucket: str, key: str, first: bytearray, rest: AsyncIterator[bytes]
    ) -> None:
        client = await self.client()
        with mapped_s3_errors(url):
            upload_id = (await client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        etags: dict[int, str] = {}
        slots = asyncio.Semaphore(self.options.max_concurrency)

        async def send(number: int, data: bytes) -> None:
            try:
                with mapped_s3_errors(url):
                    part = await client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                etags[number] = part["ETag"]
            finally:
                slots.release()

        try:
            try:
                async with asyncio.TaskGroup() as group:
                    number = 0
                    parts = aiter(_parts(first, rest, self.options.multipart_chunksize))
                    while True:
                        # Take a slot before reading the next part, so that at most
                        # max_concurrency parts are in memory at once.
                        await slots.acquire()
                        data = await anext(parts, None)
                        if data is None:
                            slots.release()
                            break
                        number += 1
                        group.create_task(send(number, data))
                        del data
            except BaseExceptionGroup as group_error:
                raise group_error.exceptions[0] from group_error
            with mapped_s3_errors(url):
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
                )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                await asyncio.shield(
                    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                )
            raise

    async def delete(self, url: str) -> None:
        bucket, key = split_s3_url(url)
        client = await self.client()
        with mapped_s3_errors(url):
            # S3 answers 204 for a missing key; the interface promises NotFound, hence the HEAD.
            await client.head_object(Bucket=bucket, Key=key)
            await client.delete_object(Bucket=bucket, Key=key)

    async def delete_many(self, urls: Sequence[str], *, concurrency: int = DELETE_CONCURRENCY) -> dict[str, Exception]:
        """DeleteObjects: up to DELETE_OBJECTS keys of a bucket per request, `concurrency`
        requests at once (S3 reports a missing key as deleted, which is what the caller wants)."""
        by_bucket: dict[str, list[tuple[str, str]]] = {}
        for url in dict.fromkeys(urls):
            bucket, key = split_s3_url(url)
            by_bucket.setdefault(bucket, []).append((key, url))
        calls = [(bucket, keys[start:start + DELETE_OBJECTS]) for bucket, keys in by_bucket.items()
                 for start in range(0, len(keys), DELETE_OBJECTS)]
        client = await self.client()
        gate = asyncio.Semaphore(concurrency)
        failed: dict[str, Exception] = {}

        async def one(bucket: str, keys: list[tuple[str, str]]) -> None:
            url_of = dict(keys)
            async with gate:
                lease_held.check_held()  # before each call, as `StoragePlugin.delete_many` does
                try:
                    with mapped_s3_errors(f"s3://{bucket}"):
                        answer = await client.delete_objects(
                            Bucket=bucket, Delete={"Objects": [{"Key": key} for key, _ in keys], "Quiet": True})
                except CairnError as exc:
                    failed.update({url: exc for _, url in keys})
                    return
            for error in answer.get("Errors", []):
                url = url_of.get(error.get("Key", ""), f"s3://{bucket}/{error.get('Key', '')}")
                failed[url] = s3_error(url, ClientError({"Error": error}, "DeleteObjects"))

        await asyncio.gather(*(one(bucket, keys) for bucket, keys in calls))
        return {url: exc for url, exc in failed.items() if not isinstance(exc, NotFound)}

    async def checksum(self, url: str) -> str:
        bucket, key = split_s3_url(url)
        client = await self.client()
        with mapped_s3_errors(url):
            tags = await client.get_object_tagging(Bucket=bucket, Key=key)
        for tag in tags.get("TagSet", []):
            if tag["Key"] == CHECKSUM_TAG:
                return str(tag["Value"])
        return await super().checksum(url)

    async def entity_tag(self, url: str) -> str:
        bucket, key = split_s3_url(url)
        client = await self.client()
        with mapped_s3_errors(url):
            head = await client.head_object(Bucket=bucket, Key=key)
        return str(head["ETag"])

    async def signed_url(
        self, url: str, *, method: Literal["GET", "PUT", "DELETE"] = "GET", lifetime_s: int = 3600,
        size: int | None = None, create_only: bool = False, if_match: str | None = None,
    ) -> str:
        bucket, key = split_s3_url(url)
        client = await self.client()
        operation = {"GET": "get_object", "PUT": "put_object", "DELETE": "delete_object"}[method]
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if method == "PUT":
            # Signed headers (SigV4): S3 refuses the URL with another Content-Length (a PUT of more
            # than was registered: a quota bypass) or without If-None-Match (overwriting an object
            # that exists: another file's, once this URL's grant is gone).
            if size is not None:
                params["ContentLength"] = size
            if create_only:
                params["IfNoneMatch"] = CREATE_ONLY_HEADERS["If-None-Match"]
        if method == "GET" and if_match is not None:
            # Signed too: the URL reads this object only, not one stored at the key after it (the
            # bytes of a file registered at the same LFN once this URL's file was removed).
            params["IfMatch"] = if_match
        with mapped_s3_errors(url):
            signed: str = await client.generate_presigned_url(operation, Params=params, ExpiresIn=lifetime_s)
        return signed
