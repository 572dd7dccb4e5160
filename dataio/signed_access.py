"""Reaching an S3 SE without its secrets: through a URL the Cairn server signs for one replica
and one method (see `transfers.signed_url_routes`). A process that holds the SE's secrets in
`CAIRN_STORAGE_CREDENTIALS` talks S3 itself; one that does not gets a signed https URL and
moves the bytes with the HTTP plugin."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from dataio.io_client import IOClient
from kernel.errors import CairnError
from transfers.endpoints import Endpoint

SignedMethod = Literal["GET", "PUT"]


def needs_signing(ep: Endpoint) -> bool:
    """Whether this endpoint is an S3 one this process holds no secret key for."""
    return ep.scheme == "s3" and not ep.options.get("secret_key")


async def signed_endpoint(client: IOClient, ep: Endpoint, lfn: str, method: SignedMethod) -> Endpoint:
    """The same replica reached through a URL the server signed for method."""
    answer = await client.signed_url(lfn, ep.se.name, method)
    verify = ep.options.get("verify")
    options: dict[str, Any] = {"ca_file": str(verify)} if isinstance(verify, str) else {}
    if answer.get("headers"):  # what the URL was signed with: a request without them is refused
        options["put_headers" if method == "PUT" else "get_headers"] = dict(answer["headers"])
    return Endpoint(ep.se, ep.protocol, str(answer["url"]), options)


def redacted(url: str) -> str:
    """A signed URL without its query, which carries the signature (a short-lived secret)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) if parts.query else url


def without_signature(exc: CairnError, url: str) -> CairnError:
    """The error with the signed URL replaced by its redacted form wherever it names it: its
    message, its details and its `url` (ChecksumMismatch carries the URL in all three)."""
    if url in exc.message:
        exc.message = exc.message.replace(url, redacted(url))
        exc.args = (exc.message,)
    exc.details = {key: value.replace(url, redacted(url)) if isinstance(value, str) else value
                   for key, value in exc.details.items()}
    if isinstance(getattr(exc, "url", None), str):
        exc.url = exc.url.replace(url, redacted(url))  # type: ignore[attr-defined]
    return exc
