"""Adler32, the checksum every Cairn file carries, computed while bytes pass by."""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator

from storage_plugins.errors import StorageError

ADLER32_START = 1
_HEX32 = re.compile(r"[0-9a-f]{1,8}")


def format_adler32(value: int) -> str:
    """The catalogue's spelling: 8 lowercase hex digits."""
    return f"{value & 0xFFFFFFFF:08x}"


def normalise_adler32(text: str, url: str = "") -> str:
    """Accept what servers answer (`0x1A2b`, `1a2b`, upper case) and spell it our way; anything
    else a server answers is its error (StorageError, naming `url`), not a ValueError that
    callers handling storage errors let through."""
    cleaned = text.strip().lower().removeprefix("0x")
    if not _HEX32.fullmatch(cleaned):
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise StorageError(f"{url or 'storage'}: the server's adler32 {shown!r} is not 1 to 8 hex digits")
    return format_adler32(int(cleaned, 16))


class Adler32:
    """An incremental adler32: feed it chunks, read `hexdigest()` at the end."""

    def __init__(self) -> None:
        self.value = ADLER32_START
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self.value = zlib.adler32(chunk, self.value)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return format_adler32(self.value)


async def tee_adler32(stream: AsyncIterable[bytes], into: Adler32) -> AsyncIterator[bytes]:
    """Pass a byte stream through unchanged, updating `into` with every chunk."""
    async for chunk in stream:
        into.update(chunk)
        yield chunk


def adler32_of_bytes(data: bytes) -> str:
    """Adler32 of bytes in memory (small data and tests)."""
    return format_adler32(zlib.adler32(data, ADLER32_START))
