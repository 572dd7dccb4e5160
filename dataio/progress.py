"""What an upload or a download reports: one outcome per file, and progress as bytes move.

Both are plain data so the SDK can return them, the CLI can print them as a table or JSON, and a
progress display (rich bars in the CLI) can follow along without the transfer code knowing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Status = Literal["uploaded", "downloaded", "exists", "failed"]


@dataclass
class FileOutcome:
    """One file's result: where it went or came from, its size and adler32, or why it failed.

    `notes` records what happened on the way (a replica found corrupted and marked bad, a
    protocol that was down and the next one used).
    """

    lfn: str
    local: str
    status: Status
    se: str | None = None
    url: str | None = None
    size: int | None = None
    adler32: str | None = None
    seconds: float = 0.0
    error: str | None = None
    code: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copies took half of `cairn upload --json`'s report.
        return {**vars(self), "notes": list(self.notes)}


class ProgressSink(Protocol):
    """Told about each file as it starts, as its bytes pass, and when it is done."""

    def started(self, name: str, size: int | None) -> None: ...

    def advanced(self, name: str, nbytes: int) -> None: ...

    def finished(self, name: str, ok: bool) -> None: ...


class NoProgress:
    """A sink that shows nothing (scripts, --json, the SDK by default)."""

    def started(self, name: str, size: int | None) -> None:
        return None

    def advanced(self, name: str, nbytes: int) -> None:
        return None

    def finished(self, name: str, ok: bool) -> None:
        return None


def outcome_summary(outcomes: Sequence[FileOutcome]) -> dict[str, Any]:
    """Counts by status and total bytes moved, for the CLI's last line."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    moved = sum(o.size or 0 for o in outcomes if o.status in ("uploaded", "downloaded"))
    return {"files": len(outcomes), **counts, "bytes": moved}


async def counted(stream: AsyncIterable[bytes], name: str, sink: ProgressSink) -> AsyncIterator[bytes]:
    """`stream` passed through, each chunk reported to `sink` as progress of `name`."""
    async for chunk in stream:
        sink.advanced(name, len(chunk))
        yield chunk
