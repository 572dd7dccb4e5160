"""WLCG HTTP third-party copy: the COPY request and the progress it streams back.

The active endpoint answers 201/202 and then streams, until the copy ends, blocks like

    Perf Marker
    Timestamp: 1795435551
    Stripe Index: 0
    Stripe Bytes Transferred: 1048576
    Total Stripe Count: 1
    End

followed by one final line `success: ...` or `failure: reason`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from kernel.errors import CairnError, NotFound, ServiceUnavailable
from storage_plugins.errors import StorageError, TransferFailed

# Redirects of a COPY followed (by hand, `redirect_target`) before giving up.
MAX_COPY_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The most of one progress line kept: a marker's lines are a few dozen bytes, a final line a
# sentence. What a server sends past it on one line is read and dropped (an unbounded line once
# stopped the copy with aiohttp's "Line is too long", a ValueError no caller expects).
MAX_LINE = 8 << 10


@dataclass
class PerfMarker:
    """One progress report of an HTTP third-party copy."""

    timestamp: int = 0
    stripe_index: int = 0
    bytes_transferred: int = 0
    stripe_count: int = 1
    remote_connections: str | None = None


@dataclass
class TpcOutcome:
    """What the active endpoint reported: its last marker, how many it sent, and the final verdict.
    Only the last marker is kept: a copy may last hours and send one every few seconds (or a
    server may send them without end), and each supersedes the one before."""

    last_marker: PerfMarker | None = None
    marker_count: int = 0
    succeeded: bool = False
    message: str = ""

    @property
    def bytes_transferred(self) -> int:
        return self.last_marker.bytes_transferred if self.last_marker else 0


_FIELDS = {
    "timestamp": "timestamp",
    "stripe index": "stripe_index",
    "stripe bytes transferred": "bytes_transferred",
    "total stripe count": "stripe_count",
}


async def bounded_lines(chunks: AsyncIterable[bytes], max_line: int = MAX_LINE) -> AsyncIterator[bytes]:
    """The lines of a byte stream, each cut to its first max_line bytes; never more than
    max_line bytes of one line held, however long the server makes it."""
    held = bytearray()
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            held += piece[:max(0, max_line - len(held))]
            if end < 0:
                break
            yield bytes(held)
            held.clear()
            start = end + 1
    if held:
        yield bytes(held)


def _count(value: str) -> int:
    """A marker's number; 0 for what is not one (a server's typo does not fail the copy)."""
    text = value.strip()
    return int(text) if text.isdigit() and len(text) <= 20 else 0


async def read_tpc_stream(
    chunks: AsyncIterable[bytes], on_marker: Callable[[PerfMarker], None] | None = None
) -> TpcOutcome:
    """Parse the body of a COPY response as it arrives (`bounded_lines` of its chunks)."""
    outcome = TpcOutcome()
    marker: PerfMarker | None = None
    async for raw in bounded_lines(chunks):
        line = raw.decode(errors="replace").strip()
        if not line:
            continue
        lowered = line.lower()
        if lowered == "perf marker":
            marker = PerfMarker()
        elif lowered == "end" and marker is not None:
            outcome.last_marker, outcome.marker_count = marker, outcome.marker_count + 1
            if on_marker is not None:
                on_marker(marker)
            marker = None
        elif marker is not None and ":" in line:
            key, _, value = line.partition(":")
            name = _FIELDS.get(key.strip().lower())
            if name is not None:
                setattr(marker, name, _count(value))
            elif key.strip().lower() == "remoteconnections":
                marker.remote_connections = value.strip()
        elif lowered.startswith("success:"):
            outcome.succeeded, outcome.message = True, line.partition(":")[2].strip()
        elif lowered.startswith("failure:"):
            outcome.succeeded, outcome.message = False, line.partition(":")[2].strip()
    return outcome


_REMOTE_404 = re.compile(r"status code 404|no such file", re.IGNORECASE)
_REMOTE_DOWN = re.compile(r"couldn't connect|could not connect|connection refused|timed? ?out", re.IGNORECASE)


def failure_error(source: str, dest: str, message: str) -> CairnError:
    """The error for a copy the active endpoint reported as failed."""
    text = f"{source} -> {dest}: third-party copy failed: {message or 'no final status line'}"
    if _REMOTE_404.search(message):
        return NotFound(text)
    if _REMOTE_DOWN.search(message):
        return ServiceUnavailable(text)
    return TransferFailed(text)


def origin(url: str) -> tuple[str, str, int]:
    """The (scheme, host, port) of an http(s) URL, the port spelt out; StorageError if it has none."""
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        port = 0
    if not parts.hostname or not port:
        raise StorageError(f"{url}: not an http(s) URL with a host")
    return parts.scheme.lower(), parts.hostname.lower(), port


def redirect_target(url: str, location: str | None, *, carries_token: bool) -> str:
    """Where to send again a COPY to url that was redirected to location. Another server is
    followed, as davix (FTS3's) does: a head node sending the COPY to a disk server is how EOS
    and dCache work, and the active endpoint's SE, which chose it, sees the tokens anyway. But a
    COPY carrying a token (the SE's own, the other endpoint's) is not sent over plain http to
    another machine, nor an https COPY downgraded; that is a StorageError naming that origin
    only (its URL may carry the server's own secrets)."""
    if not location:
        raise StorageError(f"{url}: the COPY was redirected without a Location")
    target = urljoin(url, location.strip())
    if (carries_token or origin(url)[0] == "https") and not may_carry_token(target):
        scheme, host, port = origin(target)
        raise StorageError(f"{url}: the COPY was redirected to plain http on another machine "
                           f"({scheme}://{host}:{port}); not followed, as it carries a token or came over https")
    return target


def may_carry_token(url: str) -> bool:
    """Whether a COPY to url may carry another endpoint's token: over TLS, or to this machine,
    so that the token never crosses a network in the clear (the WLCG token profile wants TLS)."""
    scheme, host, _ = origin(url)
    if scheme == "https" or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
