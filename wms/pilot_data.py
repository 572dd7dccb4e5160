"""How the pilot moves data: fetch an input replica into the work directory, put an output on its SE.

Both go through the storage plugins (one per URL scheme: file, s3, dav(s), root, ...), which
compute adler32 while the bytes pass. Storage errors become DataAccessError naming the URL, so
the pilot can try the next replica or fail the job with a readable reason.
"""

from __future__ import annotations

from pathlib import Path

from kernel.errors import CairnError
from storage_plugins.registry import plugin_for


class DataAccessError(CairnError):
    code = "data_access_error"
    status = 502


async def fetch(url: str, dest: Path, *, expected_adler32: str | None = None) -> tuple[int, str]:
    """Download a replica to `dest`; returns (size, adler32). A checksum mismatch is an error."""
    try:
        result = await plugin_for(url).get(url, dest, expected_adler32=expected_adler32.lower()
                                           if expected_adler32 else None)
    except CairnError as exc:
        raise DataAccessError(f"cannot read {url}: {exc.message}") from exc
    return result.size, result.adler32


async def put(src: Path, url: str) -> tuple[int, str]:
    """Upload a produced file to its destination URL; returns (size, adler32)."""
    try:
        result = await plugin_for(url).put(src, url)
    except CairnError as exc:
        raise DataAccessError(f"cannot write {url}: {exc.message}") from exc
    return result.size, result.adler32
