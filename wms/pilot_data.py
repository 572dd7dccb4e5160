"""How the pilot moves data: fetch an input replica into the work directory, put an output on its SE.

Both go through the storage plugins (one per URL scheme: file, s3, dav(s), root, ...), which
compute adler32 while the bytes pass. The plugin options come the way transfer workers get
them (`transfers.endpoints.endpoints`): the SE's protocol options from its definition, which
the server sends with each replica and output slot (`se_config`), overlaid with this process's
secrets for that SE (CAIRN_STORAGE_CREDENTIALS). The same call refuses a URL that is not the
SE's own URL for the LFN, so a pilot never reads or writes outside an SE. Storage errors become
DataAccessError naming the URL, so the pilot can try the next replica or fail the job with a
readable reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catalogue.replica_urls import normalised_url
from catalogue.storage_elements import StorageElement
from kernel.errors import CairnError
from storage_plugins.registry import plugin_for
from transfers.endpoints import Operation, endpoints

Credentials = Mapping[str, Mapping[str, str]]


class DataAccessError(CairnError):
    code = "data_access_error"
    status = 502


def plugin_options(url: str, lfn: str, se_config: Mapping[str, Any], operation: Operation,
                   credentials: Credentials) -> dict[str, Any]:
    """The plugin options for `url` on the SE `se_config` describes; DataAccessError when the
    URL is not that SE's URL for lfn or no protocol of the SE allows the operation on it."""
    try:
        se = StorageElement.model_validate(se_config)
        eps = endpoints(se, lfn, operation, credentials=credentials, registered_url=url)
    except (CairnError, ValueError) as exc:
        raise DataAccessError(f"cannot use {url}: {getattr(exc, 'message', exc)}") from exc
    wanted = normalised_url(url)  # endpoints keep a registered URL's variant (a job attempt's)
    for ep in eps:
        if normalised_url(ep.url) == wanted:
            return ep.options
    raise DataAccessError(f"no protocol of SE {se.name} allows {operation} of {url}")


async def fetch(url: str, dest: Path, *, lfn: str, se_config: Mapping[str, Any], credentials: Credentials,
                expected_adler32: str | None = None, size: int | None = None) -> tuple[int, str]:
    """Download a replica to `dest`; returns (size, adler32). A checksum mismatch is an error, and
    so is a stored object past the registered `size` (the copy stops there: storage replaced by a
    bigger object does not fill the worker node's disk)."""
    options = plugin_options(url, lfn, se_config, "read", credentials)
    try:
        result = await plugin_for(url, options).get(url, dest, expected_adler32=expected_adler32.lower()
                                                    if expected_adler32 else None, max_size=size)
    except CairnError as exc:
        raise DataAccessError(f"cannot read {url}: {exc.message}") from exc
    return result.size, result.adler32


async def put(src: Path, url: str, *, lfn: str, se_config: Mapping[str, Any],
              credentials: Credentials) -> tuple[int, str]:
    """Upload a produced file to its destination URL; returns (size, adler32)."""
    options = plugin_options(url, lfn, se_config, "write", credentials)
    try:
        result = await plugin_for(url, options).put(src, url)
    except CairnError as exc:
        raise DataAccessError(f"cannot write {url}: {exc.message}") from exc
    return result.size, result.adler32
