"""The base of the Python SDK: one aiohttp session, the bearer token, JSON in and out, and
API errors turned back into Cairn's exception classes. Each package adds its calls as a mixin
(`catalogue.client`, `transfers.client`, `wms.client`); `cairn.sdk.Client` combines them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import aiohttp
import orjson

from kernel import jsonio
from kernel.api_prefix import API_PREFIX
from kernel.errors import CairnError, InvalidInput, ServiceUnavailable, error_class_for
from kernel.ride_out import patience, patiently

CLIENT_FILE = "client.json"
RIDE_OUT_S = 60.0  # a call's wait for an API that went away, where safe to send again (a restart takes seconds)
# Sent again while the API is away (`kernel.ride_out`): reads, and PUTs (each sets a whole thing
# to what it carries). A DELETE is not: sent again after its answer was lost, it answers 404.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT"})


def client_defaults(var_dir: str | os.PathLike[str] | None = None) -> tuple[str, str | None]:
    """API URL and token: $CAIRN_API_URL / $CAIRN_TOKEN, else what `cairn up` wrote under ./var."""
    url = os.environ.get("CAIRN_API_URL")
    token = os.environ.get("CAIRN_TOKEN")
    token_file = os.environ.get("CAIRN_TOKEN_FILE")
    if token is None and token_file:
        token = Path(token_file).read_text().strip()
    saved = Path(var_dir or os.environ.get("CAIRN_VAR_DIR", "var")) / CLIENT_FILE
    if (url is None or token is None) and saved.is_file():
        data = json.loads(_own_file(saved).read_text())
        url = url or data.get("url")
        token = token if token is not None else data.get("token")
    return (url or "http://127.0.0.1:8700").rstrip("/"), token


def _own_file(path: Path) -> Path:
    """`path` if this account owns it and nobody else may rewrite it: the saved settings are read
    from the current directory, and one planted there (a shared project area) named its writer's
    server, to which the caller's token and uploads then went."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise InvalidInput(f"{path} is not yours (its owner is uid {info.st_uid}): not read. Set CAIRN_API_URL "
                           "and CAIRN_TOKEN, or CAIRN_VAR_DIR to your own directory")
    if info.st_mode & 0o022:
        raise InvalidInput(f"{path} is writable by others: not read (chmod 600 it)")
    return path


def lfn_path(lfn: str) -> str:
    """An LFN as a URL path segment sequence (each segment quoted, slashes kept)."""
    return quote(lfn, safe="/")


class NotSent(ServiceUnavailable):
    """The API could not be reached at all (no connection was made): the call was not sent, so
    sending it again is safe whatever it does."""


class BaseClient:
    """HTTP plumbing shared by every SDK mixin."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout_s: float | None = None,
                 ride_out_s: float | None = None) -> None:
        """`timeout_s` ($CAIRN_API_TIMEOUT, else 300) bounds how long the API may stay silent (no
        byte of an answer or of a stream's body), not how long an answer may take: a 1M-entry
        stream runs for minutes."""
        default_url, default_token = client_defaults()
        self.url = (url or default_url).rstrip("/")
        self.token = token if token is not None else default_token
        self.timeout_s = timeout_s if timeout_s is not None else float(os.environ.get("CAIRN_API_TIMEOUT", 300))
        # How long a read, an upload, a download or a named call waits for an API that went away
        # ($CAIRN_API_RIDE_OUT, else RIDE_OUT_S; 0: fail at once), `kernel.ride_out`.
        self.ride_out_s = ride_out_s if ride_out_s is not None else float(
            os.environ.get("CAIRN_API_RIDE_OUT", RIDE_OUT_S))
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._answered = False  # the API answered this client once: one away since is waited for (ride_out_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if extra:
            headers.update(extra)
        return headers

    def _url(self, path: str) -> str:
        return f"{self.url}{API_PREFIX}{path}"

    @contextlib.asynccontextmanager
    async def _response(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
        accept: str = "application/json",
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The open response of one API call; an error status raises the matching CairnError,
        and an API that cannot be reached (also in the middle of a stream) ServiceUnavailable."""
        data = jsonio.dumps(json_body) if json_body is not None else None
        headers = self._headers({"Accept": accept})
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(
                method, self._url(path), data=data, params=_clean(params), headers=headers
            ) as resp:
                self._answered = True
                if resp.status >= 400:
                    raise _error_from(resp.status, await resp.read(), resp.headers)
                yield resp
        except aiohttp.ConnectionTimeoutError as exc:
            raise NotSent(f"cannot reach the Cairn API at {self.url}: connection timed out") from exc
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError (sock_read) derives from it
            raise ServiceUnavailable(f"the Cairn API at {self.url} sent nothing for {self.timeout_s:g} s "
                                     f"({method} {path}); it may be overloaded, or the call needs a longer "
                                     "timeout", retry_after=5) from exc
        except aiohttp.ClientConnectorError as exc:  # no connection made (refused: a server restarting)
            raise NotSent(f"cannot reach the Cairn API at {self.url}: {exc}") from exc
        except aiohttp.ClientConnectionError as exc:
            raise ServiceUnavailable(f"cannot reach the Cairn API at {self.url}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _opened(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
        accept: str = "application/json",
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """`_response` for a stream: a read's opening is sent again while an API that answered this
        client before is away (nothing of the stream was seen yet); once it flows, a cut is raised."""
        wait_s = self.ride_out_s if method in IDEMPOTENT_METHODS and self._answered else 0.0
        async with contextlib.AsyncExitStack() as stack:

            async def opening() -> aiohttp.ClientResponse:
                return await stack.enter_async_context(
                    self._response(method, path, json_body=json_body, params=params, accept=accept))

            yield await patiently(opening, at_least=wait_s)

    async def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """One API call; returns the decoded JSON body or raises the matching CairnError. An API
        that answered this client before and went away (a restart, 503s while its database is
        away) is waited for, up to `ride_out_s`, by a read or a PUT, and by any call under
        `kernel.ride_out.riding_out` (the SDK's calls that are safe to send twice). Any other call
        (a move, a removal) waits for it only while no connection can be made (NotSent: nothing
        was sent); one sent and then cut off, or answered 503, fails at once (sent again, it
        could answer 404 for what its first sending did)."""
        at_least = self.ride_out_s if method in IDEMPOTENT_METHODS else 0.0

        def once() -> Awaitable[Any]:
            return self._request_once(method, path, json_body=json_body, params=params)

        if not self._answered:
            try:
                return await once()
            except ServiceUnavailable:
                # Never reached (a wrong URL, a server not started): said at once. Reached, it
                # answered 503 (its database away): waited for like a call after it, if safe to resend.
                if not self._answered or patience(at_least) <= 0:
                    raise
        if patience(at_least) <= 0:
            return await patiently(once, at_least=self.ride_out_s, only=NotSent)
        return await patiently(once, at_least=at_least)

    async def _request_once(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        async with self._response(method, path, json_body=json_body, params=params) as resp:
            body = await resp.read()
        return json.loads(body) if body else None

    async def stream_lines(
        self, path: str, *, params: dict[str, Any] | None = None, method: str = "GET", json_body: Any = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Iterate a newline-delimited JSON response as it arrives."""
        async for lines in self.stream_line_chunks(path, params=params, method=method, json_body=json_body):
            for line in lines:
                yield orjson.loads(line)

    async def stream_line_chunks(
        self, path: str, *, params: dict[str, Any] | None = None, method: str = "GET", json_body: Any = None
    ) -> AsyncIterator[list[bytes]]:
        """A newline-delimited JSON response as it arrives, as lists of its lines, undecoded
        (without newlines): for a caller that passes them on. The error line that ends a stream
        cut short is raised as its CairnError, after the lines before it."""
        async with self._opened(method, path, json_body=json_body, params=params,
                                accept="application/x-ndjson") as resp:
            rest = b""
            async for chunk in resp.content.iter_any():
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                lines = [line for line in lines if line.strip()]
                error = _stream_error(lines[-1]) if lines else None
                if error is not None:
                    lines.pop()
                if lines:
                    yield lines
                if error is not None:
                    raise error
            if rest.strip():
                error = _stream_error(rest)
                if error is not None:
                    raise error
                yield [rest]

    async def download_to(
        self, path: str, dest: Path, *, params: dict[str, Any] | None = None, method: str = "GET", json_body: Any = None
    ) -> int:
        """Stream a binary response (Parquet, Arrow) to a file; returns bytes written."""
        written = 0
        async with self._opened(method, path, json_body=json_body, params=params) as resp:
            with dest.open("wb") as out:
                async for chunk in resp.content.iter_chunked(1 << 20):
                    out.write(chunk)
                    written += len(chunk)
        return written

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/health")
        return result


def _stream_error(line: bytes) -> CairnError | None:
    """The CairnError of a stream's error line (the last line of a stream cut short), else None."""
    if not line.startswith(b'{"error":'):
        return None
    item = orjson.loads(line)
    if not (isinstance(item, dict) and set(item) == {"error"}):
        return None
    err = item["error"]
    return error_class_for(err.get("code", ""))(err.get("message", "stream failed"))


def _clean(params: dict[str, Any] | None) -> dict[str, str] | None:
    if params is None:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _error_from(status: int, body: bytes, headers: Any) -> CairnError:
    try:
        data = json.loads(body)
        code, message, details = data.get("code", ""), data.get("message", ""), data.get("details")
    except (ValueError, AttributeError):
        code, message, details = "", body.decode(errors="replace")[:500], None
    cls = error_class_for(code)
    if cls is CairnError or cls.status != status:
        cls = _by_status(status, cls)
    if cls is ServiceUnavailable:
        retry = headers.get("Retry-After", "5") if headers else "5"
        return ServiceUnavailable(message or "service unavailable", retry_after=int(retry) if retry.isdigit() else 5)
    err = cls(message or f"HTTP {status}", details=details)
    return err


def _by_status(status: int, fallback: type[CairnError]) -> type[CairnError]:
    for code in ("invalid_input", "unauthenticated", "forbidden", "not_found", "conflict", "body_too_large",
                 "quota_exceeded", "service_unavailable"):
        cls = error_class_for(code)
        if cls.status == status:
            return cls
    return fallback
