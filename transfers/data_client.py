"""SDK calls that move bytes through the client: upload and download by LFN (mixed into
`cairn.sdk.Client`). Storage secrets and the reader's site come from this process's settings
(`CAIRN_STORAGE_CREDENTIALS`, `CAIRN_SITE`) unless given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from catalogue.client import CatalogueClient
from kernel.settings import get_settings
from transfers.download import download_files
from transfers.io_report import FileOutcome, ProgressSink
from transfers.upload import upload_files


class DataClient(CatalogueClient):
    """Upload and download through the catalogue."""

    async def signed_url(self, lfn: str, se: str, method: str = "GET", *, lifetime_s: int = 3600) -> dict[str, Any]:
        """A URL the server signed for method on lfn's replica on S3 SE se (no S3 secrets needed)."""
        body = {"lfn": lfn, "se": se, "method": method, "lifetime_s": lifetime_s}
        result: dict[str, Any] = await self.request("POST", "/storage/signed-url", json_body=body)
        return result

    async def upload(
        self,
        paths: Sequence[str | Path],
        lfn: str,
        se: str,
        *,
        credentials: Mapping[str, Mapping[str, str]] | None = None,
        progress: ProgressSink | None = None,
        concurrency: int = 4,
    ) -> list[FileOutcome]:
        """Store local files on SE `se` and register them at lfn (a directory for several files)."""
        creds = get_settings().storage_credentials if credentials is None else credentials
        return await upload_files(self, paths, lfn, se, credentials=creds, progress=progress,
                                  concurrency=concurrency)

    async def download(
        self,
        lfns: Sequence[str],
        dest: str | Path | None = None,
        *,
        credentials: Mapping[str, Mapping[str, str]] | None = None,
        site: str | None = None,
        progress: ProgressSink | None = None,
        concurrency: int = 4,
    ) -> list[FileOutcome]:
        """Fetch LFNs from their best replicas into dest (a directory for several LFNs)."""
        settings = get_settings()
        creds = settings.storage_credentials if credentials is None else credentials
        return await download_files(self, lfns, dest, credentials=creds, site=settings.site if site is None else site,
                                    progress=progress, concurrency=concurrency)
