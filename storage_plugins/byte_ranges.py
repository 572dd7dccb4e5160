"""How many bytes to take of a server's answer: the range asked for, or no more than the size
expected.

HTTP lets a server ignore Range and answer 200 with the whole file (RFC 9110, 14.2), and a
server may send more than asked: a ranged read that yielded the answer as it came gave bytes
from the start of the file for a read at an offset (fsspec's `cairn://` partial reads, which no
checksum covers). A whole-file read whose size is known stops as soon as the server sends more
(`at_most`), rather than reading to the end of an answer that may have none."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable

from storage_plugins.errors import StorageError

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def range_skip(url: str, offset: int, partial: bool, content_range: str | None) -> int:
    """Bytes to drop from the start of an answer to a Range beginning at offset: none when the
    server answered that range (206, its Content-Range starting at offset), offset when it sent
    the whole file (200). A range starting elsewhere is a StorageError."""
    if not partial:
        return offset
    found = _CONTENT_RANGE.fullmatch((content_range or "").strip())
    if found is None or int(found.group(1)) != offset:
        raise StorageError(f"{url}: asked for the bytes from {offset}, the server answered the range {content_range!r}")
    return 0


async def within(chunks: AsyncIterable[bytes], skip: int, take: int | None) -> AsyncIterator[bytes]:
    """The chunks without their first `skip` bytes, and at most `take` bytes of them (None: all)."""
    async for chunk in chunks:
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        if take is not None:
            if len(chunk) >= take:
                yield chunk[:take]
                return
            take -= len(chunk)
        yield chunk


async def at_most(chunks: AsyncIterable[bytes], size: int, too_many: Callable[[], Exception]) -> AsyncIterator[bytes]:
    """The chunks, raising too_many() as soon as they pass size bytes (nothing past it is yielded).
    The source stream is closed then, so its connection goes at once, not when it is collected."""
    seen = 0
    source = aiter(chunks)
    try:
        async for chunk in source:
            seen += len(chunk)
            if seen > size:
                raise too_many()
            yield chunk
    finally:
        if isinstance(source, AsyncGenerator):
            await source.aclose()
