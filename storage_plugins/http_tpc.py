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

import re
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

from kernel.errors import CairnError, NotFound, ServiceUnavailable
from storage_plugins.errors import TransferFailed


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
    """What the active endpoint reported: markers seen and the final verdict."""

    markers: list[PerfMarker] = field(default_factory=list)
    succeeded: bool = False
    message: str = ""

    @property
    def bytes_transferred(self) -> int:
        return self.markers[-1].bytes_transferred if self.markers else 0


_FIELDS = {
    "timestamp": "timestamp",
    "stripe index": "stripe_index",
    "stripe bytes transferred": "bytes_transferred",
    "total stripe count": "stripe_count",
}


async def read_tpc_stream(
    lines: AsyncIterable[bytes], on_marker: Callable[[PerfMarker], None] | None = None
) -> TpcOutcome:
    """Parse the body of a COPY response as it arrives."""
    outcome = TpcOutcome()
    marker: PerfMarker | None = None
    async for raw in lines:
        line = raw.decode(errors="replace").strip()
        if not line:
            continue
        lowered = line.lower()
        if lowered == "perf marker":
            marker = PerfMarker()
        elif lowered == "end" and marker is not None:
            outcome.markers.append(marker)
            if on_marker is not None:
                on_marker(marker)
            marker = None
        elif marker is not None and ":" in line:
            key, _, value = line.partition(":")
            name = _FIELDS.get(key.strip().lower())
            if name is not None:
                setattr(marker, name, int(value.strip() or 0))
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
