"""How the pilot moves data: fetch an input replica into the work directory, put an output on its SE.

`file://` URLs (the local disk SEs of `cairn up` and of the tests) are copied in a thread,
computing adler32 while copying. Other schemes belong to the storage plugins; until the
pilot uses them it reports them as unsupported, so the job fails with a readable reason.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from kernel.errors import CairnError

CHUNK = 1 << 20


class DataAccessError(CairnError):
    code = "data_access_error"
    status = 502


def format_adler32(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def local_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise DataAccessError(f"the pilot reads and writes file:// URLs only so far, not {parsed.scheme}:// ({url})")
    return Path(unquote(parsed.path))


def _copy(src: Path, dest: Path) -> tuple[int, str]:
    checksum = 1
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with src.open("rb") as fin, tmp.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            checksum = zlib.adler32(chunk, checksum)
            size += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    tmp.replace(dest)
    return size, format_adler32(checksum)


async def fetch(url: str, dest: Path, *, expected_adler32: str | None = None) -> tuple[int, str]:
    """Copy a replica to `dest`; returns (size, adler32). A checksum mismatch is an error."""
    src = local_path(url)
    try:
        size, checksum = await asyncio.to_thread(_copy, src, dest)
    except OSError as exc:
        raise DataAccessError(f"cannot read {url}: {exc.strerror or exc}") from exc
    if expected_adler32 and checksum != expected_adler32.lower():
        await asyncio.to_thread(dest.unlink, missing_ok=True)
        raise DataAccessError(f"{url}: adler32 {checksum} differs from the catalogue's {expected_adler32}")
    return size, checksum


async def put(src: Path, url: str) -> tuple[int, str]:
    """Copy a produced file to its destination URL; returns (size, adler32)."""
    dest = local_path(url)
    try:
        return await asyncio.to_thread(_copy, src, dest)
    except OSError as exc:
        raise DataAccessError(f"cannot write {url}: {exc.strerror or exc}") from exc
