"""SDK calls that move bytes through the client: upload and download by LFN (mixed into
`cairn.sdk.Client`). Storage secrets and the reader's site come from this process's settings
(`CAIRN_STORAGE_CREDENTIALS`, `CAIRN_SITE`) unless given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dataio.io_client import IOClient
from kernel.ride_out import riding_out

if TYPE_CHECKING:
    from dataio.progress import FileOutcome, ProgressSink


class DataClient(IOClient):
    """Upload and download through the catalogue."""

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
        # Imported here: the SDK's other calls (and every CLI command but these) need neither the
        # storage plugins nor the catalogue's models and settings.
        from dataio.upload import upload_files
        from kernel.settings import get_settings

        creds = get_settings().storage_credentials if credentials is None else credentials
        with riding_out(self.ride_out_s):  # each of its calls is safe to send again (`kernel.ride_out`)
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
        from dataio.download import download_files
        from kernel.settings import get_settings

        settings = get_settings()
        creds = settings.storage_credentials if credentials is None else credentials
        with riding_out(self.ride_out_s):
            return await download_files(self, lfns, dest, credentials=creds,
                                        site=settings.site if site is None else site, progress=progress,
                                        concurrency=concurrency)
