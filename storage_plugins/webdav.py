"""`http(s)://` and `dav(s)://` URLs: WebDAV storage (XRootD's XrdHttp, dCache, EOS, StoRM...)
through aiohttp: GET/PUT/DELETE, PROPFIND, MKCOL, adler32 through `Want-Digest`, and WLCG
HTTP third-party copy (COPY with `Source` or `Destination`). dav/davs are http/https on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import Field

from kernel.errors import CairnError, Conflict, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from storage_plugins.base import FileInfo, PluginOptions, StoragePlugin, TpcMode, WriteResult
from storage_plugins.byte_ranges import range_skip, within
from storage_plugins.checksums import Adler32, normalise_adler32, tee_adler32
from storage_plugins.errors import NotSupported, StorageError
from storage_plugins.http_tpc import (
    MAX_COPY_REDIRECTS,
    REDIRECT_STATUSES,
    failure_error,
    may_carry_token,
    read_tpc_stream,
    redirect_target,
)
from storage_plugins.multistatus import read_multistatus

WIRE_SCHEME = {"dav": "http", "davs": "https", "http": "http", "https": "https"}
PROPFIND_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    "<D:getcontentlength/><D:getlastmodified/><D:resourcetype/></D:prop></D:propfind>"
)


class WebDavOptions(PluginOptions):
    # A CA bundle to trust instead of the system's (self-signed test beds, grid CAs).
    ca_file: str | None = None
    verify: bool = True
    # Bearer token sent as Authorization (WLCG / SciTokens).
    token: str | None = None
    # Largest PROPFIND answer read (a listing of some 200k entries): what a server sends beyond
    # it is refused rather than read without end (`storage_plugins.multistatus`).
    max_propfind_bytes: int = Field(64 << 20, ge=1 << 10)
    connect_timeout_s: float = Field(10, gt=0)
    # Longest silence while reading a response (a GET chunk, a TPC performance marker).
    read_timeout_s: float = Field(300, gt=0)
    max_connections: int = Field(32, ge=1, le=4096)
    # Headers every PUT carries: the conditions a signed URL was signed with (`CREATE_ONLY_HEADERS`).
    put_headers: dict[str, str] = Field(default_factory=dict)
    # Headers every GET carries: the condition a signed URL for reading was signed with (If-Match).
    get_headers: dict[str, str] = Field(default_factory=dict)


def wire_url(url: str) -> str:
    """The http(s) URL a dav(s)/http(s) URL is fetched at."""
    parts = urlsplit(url)
    scheme = WIRE_SCHEME.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise InvalidInput(f"{url}: not an HTTP/WebDAV URL")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def _parent(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rstrip("/").rsplit("/", 1)[0] or "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# What is read of an error answer's body: its first lines say what went wrong, and a server
# (buggy, hostile, or one a redirect chose) may send an error body without end.
ERROR_BODY_BYTES = 4 << 10


async def error_body(content: aiohttp.StreamReader) -> str:
    """The start of an error answer's body (ERROR_BODY_BYTES at most); the rest is left unread."""
    data = bytearray()
    while len(data) < ERROR_BODY_BYTES and (chunk := await content.read(ERROR_BODY_BYTES - len(data))):
        data += chunk
    return data.decode(errors="replace")


def http_error(url: str, status: int, body: str) -> CairnError:
    """Map an HTTP error status to the kernel's classes, naming the URL."""
    detail = body.strip()[:300] or f"HTTP {status}"
    if status == 404:
        return NotFound(f"{url}: not found ({detail})")
    if status in (401, 403):
        return Forbidden(f"{url}: permission denied ({detail})")
    if status in (502, 503, 504):
        return ServiceUnavailable(f"{url}: storage unavailable ({detail})")
    if status in (409, 412):
        return Conflict(f"{url}: {detail}")
    return StorageError(f"{url}: HTTP {status}: {detail}")


# Requests that change nothing on the storage, so a connection broken before any answer may be
# retried once (`WebDavPlugin._send`).
RESENDABLE = frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS"})


class WebDavPlugin(StoragePlugin):
    """WebDAV over aiohttp, one connection pool per plugin instance."""

    schemes = ("davs", "dav", "https", "http")
    tpc_family = "http"
    server_checksum = True
    Options = WebDavOptions
    options: WebDavOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._session: aiohttp.ClientSession | None = None
        # Directories a pulling COPY made or found here: the next copy into one skips its MKCOLs
        # (one per path segment). Forgotten when a copy into it fails, so a retry makes it again.
        self._made_dirs: set[str] = set()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            opts = self.options
            ssl_arg: ssl.SSLContext | bool = False
            if opts.verify:
                ssl_arg = ssl.create_default_context(cafile=opts.ca_file)
            connector = aiohttp.TCPConnector(ssl=ssl_arg, limit=opts.max_connections)
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=opts.connect_timeout_s, sock_read=opts.read_timeout_s
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else {}
        headers.update(extra or {})
        return headers

    @contextlib.asynccontextmanager
    async def _request(
        self, method: str, url: str, *, ok: tuple[int, ...] = (200, 201, 204, 206, 207), **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request with errors mapped; yields the response when its status is in ok."""
        headers = self._headers(kwargs.pop("headers", None))
        try:
            async with await self._send(method, url, headers, kwargs) as response:
                if response.status not in ok:
                    raise http_error(url, response.status, await error_body(response.content))
                yield response
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ServiceUnavailable(
                f"{url}: cannot reach the storage ({exc.__class__.__name__}: {exc})"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise StorageError(f"{url}: transfer broken off ({exc})") from exc

    async def _send(
        self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        """The response to one request. A request that changes nothing is sent once more when its
        connection breaks before any answer: a pooled keep-alive connection the server had just
        closed (XrdHttp closes some after an error answer) fails that way, and aiohttp resends
        only the methods it knows to be idempotent, not PROPFIND. Others (PUT of a stream that is
        gone, COPY, DELETE, MKCOL) are not resent: the server may have acted on them."""
        try:
            return await self.session().request(method, wire_url(url), headers=headers, **kwargs)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            if method not in RESENDABLE:
                raise
        return await self.session().request(method, wire_url(url), headers=headers, **kwargs)

    @contextlib.asynccontextmanager
    async def _copy(self, url: str, headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
        """The accepted answer (201/202) to a COPY at url, its redirects followed here, never to
        plain http on another machine while it carries a token (`http_tpc.redirect_target`):
        aiohttp follows them anywhere, dropping only Authorization, not the other endpoint's token."""
        url = wire_url(url)
        for _ in range(MAX_COPY_REDIRECTS + 1):
            ok = (201, 202, *REDIRECT_STATUSES)
            async with self._request("COPY", url, headers=headers, ok=ok, allow_redirects=False) as response:
                if response.status in (201, 202):
                    yield response
                    return
                location = response.headers.get("Location")
            url = redirect_target(url, location, carries_token=bool(self.options.token)
                                  or "TransferHeaderAuthorization" in headers)
        raise StorageError(f"{url}: the COPY was redirected more than {MAX_COPY_REDIRECTS} times")

    async def _propfind(self, url: str, depth: str) -> list[FileInfo]:
        headers = {"Depth": depth, "Content-Type": "application/xml"}
        async with self._request("PROPFIND", url, headers=headers, data=PROPFIND_BODY, ok=(207,)) as response:
            return await read_multistatus(url, response.content.iter_any(), self.options.max_propfind_bytes)

    async def stat(self, url: str) -> FileInfo:
        entries = await self._propfind(url, "0")
        if not entries:
            raise StorageError(f"{url}: PROPFIND answered no entry")
        entry = entries[0]
        return FileInfo(url, entry.size, entry.is_dir, entry.mtime)

    async def list(self, url: str) -> list[FileInfo]:
        entries = await self._propfind(url, "1")
        own = urlsplit(wire_url(url)).path.rstrip("/") or "/"
        children = [entry for entry in entries if (urlsplit(entry.url).path.rstrip("/") or "/") != own]
        if len(children) == len(entries) == 0 or (not children and not entries[0].is_dir):
            raise InvalidInput(f"{url}: not a directory")
        scheme = urlsplit(url).scheme
        return sorted(
            (
                FileInfo(urlunsplit((scheme, *urlsplit(e.url)[1:])), e.size, e.is_dir, e.mtime)
                for e in children
            ),
            key=lambda entry: entry.url,
        )

    async def read(self, url: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        headers = dict(self.options.get_headers)
        if offset or length is not None:
            if length == 0:
                return
            if length is None:
                # XrdHttp 5.5 answers an open-ended range ("bytes=7-") with no bytes at all.
                length = (await self.stat(url)).size - offset
                if length <= 0:
                    return
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        async with self._request("GET", url, headers=headers) as response:
            skip = range_skip(url, offset, response.status == 206, response.headers.get("Content-Range")) \
                if "Range" in headers else 0
            try:
                async for chunk in within(response.content.iter_chunked(self.options.chunk_size), skip, length):
                    yield chunk
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                raise ServiceUnavailable(f"{url}: connection lost while reading ({exc})") from exc

    async def write(self, url: str, stream: AsyncIterable[bytes], *, size: int | None = None) -> WriteResult:
        digest = Adler32()
        headers = {**self.options.put_headers, **({} if size is None else {"Content-Length": str(size)})}
        body: Any = b"" if size == 0 else tee_adler32(stream, digest)
        async with self._request("PUT", url, headers=headers, data=body, ok=(200, 201, 204)):
            pass
        if size == 0:
            async for chunk in stream:  # an empty stream still has to be consumed
                digest.update(chunk)
        if size is not None and digest.size != size:
            raise StorageError(f"{url}: announced {size} bytes but the stream gave {digest.size}")
        return WriteResult(url, digest.size, digest.hexdigest())

    async def delete(self, url: str) -> None:
        async with self._request("DELETE", url, ok=(200, 202, 204)):
            pass

    async def mkdir(self, url: str) -> None:
        parts = urlsplit(url)
        path = ""
        for segment in [s for s in parts.path.split("/") if s]:
            path += "/" + segment
            # 405 (or 409 on some servers) answers a MKCOL of something that exists already.
            async with self._request(
                "MKCOL", urlunsplit((parts.scheme, parts.netloc, path, "", "")), ok=(200, 201, 204, 405)
            ):
                pass

    async def size_and_checksum(self, url: str) -> tuple[int, str]:
        """One HEAD: Content-Length and the adler32 Digest (else as the base class does)."""
        async with self._request("HEAD", url, headers={"Want-Digest": "adler32"}) as response:
            length, digest_header = response.headers.get("Content-Length"), response.headers.get("Digest", "")
        for item in digest_header.split(","):
            name, _, value = item.strip().partition("=")
            if name.lower() == "adler32" and value and length is not None and length.isdigit():
                return int(length), normalise_adler32(value, url)
        return await super().size_and_checksum(url)

    async def checksum(self, url: str) -> str:
        async with self._request("HEAD", url, headers={"Want-Digest": "adler32"}) as response:
            digest_header = response.headers.get("Digest", "")
        for item in digest_header.split(","):
            name, _, value = item.strip().partition("=")
            if name.lower() == "adler32" and value:
                return normalise_adler32(value, url)
        return await super().checksum(url)

    async def third_party_copy(
        self,
        source: str,
        dest: str,
        *,
        mode: TpcMode = "pull",
        overwrite: bool = True,
        timeout_s: float = 3600,
        remote_token: str | None = None,
    ) -> int:
        """COPY between two WebDAV endpoints: pull (dest fetches `Source`) or push (source sends).
        remote_token, the passive endpoint's, goes only over TLS or loopback, to the active
        endpoint and where its redirects lead (`_copy`, `http_tpc.may_carry_token`)."""
        target = dest if mode == "pull" else source
        if remote_token and not may_carry_token(wire_url(target)):
            raise NotSupported(f"{source} -> {dest}: the other endpoint's token is not sent to {target} "
                               "over plain http; give the active endpoint an https protocol")
        parent = _parent(dest)
        if mode == "pull":
            if parent not in self._made_dirs:
                await self.mkdir(parent)
                if len(self._made_dirs) > 100_000:
                    self._made_dirs.clear()
                self._made_dirs.add(parent)
            headers = {"Source": wire_url(source)}
        else:
            headers = {"Destination": wire_url(dest)}
        headers["Overwrite"] = "T" if overwrite else "F"
        headers["Credential"] = "none"
        if remote_token:
            headers["TransferHeaderAuthorization"] = f"Bearer {remote_token}"
        try:
            async with asyncio.timeout(timeout_s):
                async with self._copy(target, headers) as response:
                    outcome = await read_tpc_stream(response.content.iter_any())
        except TimeoutError as exc:
            self._made_dirs.discard(parent)
            raise ServiceUnavailable(
                f"{source} -> {dest}: third-party copy did not end in {timeout_s:.0f}s"
            ) from exc
        except BaseException:
            self._made_dirs.discard(parent)
            raise
        if not outcome.succeeded:
            self._made_dirs.discard(parent)
            if mode == "pull":
                with contextlib.suppress(CairnError):
                    await self.delete(dest)
            raise failure_error(source, dest, outcome.message)
        return outcome.bytes_transferred
