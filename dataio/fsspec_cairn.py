"""`cairn://` for fsspec: the namespace as a read-only filesystem, each file read from its best
replica, so pandas, pyarrow and dask open files by LFN.

    pandas.read_parquet("cairn:///cta/run1/events.parquet",
                        storage_options={"api_url": "https://cairn.example", "token": "..."})

Registered through the `fsspec.specs` entry point. Options: `api_url` and `token` of the API
(default: $CAIRN_API_URL / $CAIRN_TOKEN as for the CLI; not `url`, which fsspec's
`url_to_fs(url, **storage_options)` and so pandas take for the path itself), `site` (replicas there first,
default $CAIRN_SITE) and `credentials` (storage secrets per SE, default
$CAIRN_STORAGE_CREDENTIALS).

Reads go to replicas in `dataio.replica_order` order; a replica that fails (down, missing,
corrupt) is left for the next. A whole-file read (`cat`, `get`) is checked against the
catalogue's adler32; ranged reads (what Parquet readers do) cannot be, and trust the replica
chosen, as every range reader must. Writing is not offered: use `cairn upload`, which
registers and verifies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fsspec.asyn import AsyncFileSystem, sync
from fsspec.spec import AbstractBufferedFile

from catalogue.storage_elements import StorageElement
from dataio.client import DataClient
from dataio.download import download_one
from dataio.progress import NoProgress
from dataio.replica_order import replicas_to_read
from dataio.signed_access import needs_signing, redacted, signed_endpoint, without_signature
from kernel.errors import CairnError, Forbidden, NotFound
from kernel.settings import get_settings
from storage_plugins.checksums import Adler32
from storage_plugins.errors import ChecksumMismatch
from transfers.endpoints import endpoints

Json = dict[str, Any]


def _os_error(path: str, exc: CairnError) -> OSError:
    """What fsspec callers expect: FileNotFoundError, PermissionError, else OSError."""
    if isinstance(exc, NotFound):
        return FileNotFoundError(2, exc.message, path)
    if isinstance(exc, Forbidden):
        return PermissionError(13, exc.message, path)
    return OSError(5, exc.message, path)


class CairnFileSystem(AsyncFileSystem):
    """Read-only fsspec filesystem over the Cairn catalogue."""

    protocol = "cairn"
    root_marker = "/"

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        *,
        site: str | None = None,
        credentials: Mapping[str, Mapping[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.api_url, self.token = api_url, token
        settings = get_settings() if site is None or credentials is None else None
        self.site = site if site is not None else (settings.site if settings else None)
        self.credentials = dict(credentials) if credentials is not None else (
            settings.storage_credentials if settings else {})
        self._client: DataClient | None = None
        self._ses: dict[str, StorageElement] | None = None

    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if text.startswith("cairn://"):
            text = text[len("cairn://"):]
        text = "/" + text.strip("/")
        return text

    async def _api(self) -> DataClient:
        # Made on first use, inside fsspec's event loop, which then owns its session.
        if self._client is None:
            self._client = DataClient(self.api_url, self.token)
        return self._client

    async def _storage_elements(self) -> dict[str, StorageElement]:
        if self._ses is None:
            client = await self._api()
            self._ses = {se["name"]: StorageElement.model_validate(se) for se in await client.list_ses()}
        return self._ses

    async def _file(self, path: str) -> Json:
        try:
            doc: Json = await (await self._api()).get_file(path)
        except CairnError as exc:
            raise _os_error(path, exc) from exc
        return doc

    # ------------------------------------------------------------------------ namespace

    async def _info(self, path: str, **kwargs: Any) -> Json:
        path = self._strip_protocol(path)
        try:
            entry = await (await self._api()).stat(path)
        except CairnError as exc:
            raise _os_error(path, exc) from exc
        return _as_info(entry)

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        info = await self._info(path)
        if info["type"] != "directory":
            return [info] if detail else [path]
        try:
            entries = [_as_info(e) async for e in (await self._api()).ls(path)]
        except CairnError as exc:
            raise _os_error(path, exc) from exc
        return entries if detail else [e["name"] for e in entries]

    # ---------------------------------------------------------------------------- bytes

    async def read_range(self, doc: Json, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file from its first replica that delivers them; the whole file
        is checked against its adler32 (a corrupt replica is skipped)."""
        lfn = str(doc["lfn"])
        ses = await self._storage_elements()
        readable, skipped = replicas_to_read(lfn, doc.get("replicas", []), ses, site=self.site)
        reasons = [f"SE {name}: {why}" for name, why in skipped.items()]
        whole = start == 0 and end >= int(doc["size"])
        for replica in readable:
            try:
                eps = endpoints(replica.se, replica.path, "read", credentials=self.credentials,
                                registered_url=replica.url)
            except CairnError as exc:
                reasons.append(exc.message)
                continue
            for ep in eps:
                try:
                    if needs_signing(ep):
                        ep = await signed_endpoint(await self._api(), ep, lfn, "GET")
                    plugin = (await self._api()).plugin(ep.url, ep.options)
                    data = b"".join([c async for c in plugin.read(ep.url, offset=start, length=end - start)])
                    if whole:
                        digest = Adler32()
                        digest.update(data)
                        if digest.hexdigest() != doc["adler32"]:
                            # Named without its signature, as every error from a signed URL is.
                            raise ChecksumMismatch(redacted(ep.url), str(doc["adler32"]), digest.hexdigest())
                    return data
                except ChecksumMismatch as exc:
                    reasons.append(f"SE {replica.se.name}: corrupted replica ({exc.message})")
                    break
                except CairnError as exc:
                    reasons.append(f"SE {replica.se.name}: {without_signature(exc, ep.url).message}")
        raise OSError(5, f"no replica of {lfn} could be read: {'; '.join(reasons) or 'it has none'}", lfn)

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        doc = await self._file(path)
        size = int(doc["size"])
        begin, stop = _bounds(start, end, size)
        if begin >= stop:
            return b""
        return await self.read_range(doc, begin, stop)

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        rpath = self._strip_protocol(rpath)
        outcome = await download_one(await self._api(), rpath, Path(lpath), await self._storage_elements(),
                                     credentials=self.credentials, site=self.site, sink=NoProgress())
        if not outcome.ok:
            raise OSError(5, outcome.error, rpath)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> CairnFile:
        if mode != "rb":
            raise NotImplementedError("cairn:// is read-only; store files with `cairn upload`")
        path = self._strip_protocol(path)
        doc = sync(self.loop, self._file, path)
        return CairnFile(self, path, doc, block_size=block_size or "default", cache_options=cache_options)

    async def close_session(self) -> None:
        """Close the API session (the fs closes it on its own at interpreter exit otherwise)."""
        if self._client is not None:
            await self._client.close()
            self._client = None


class CairnFile(AbstractBufferedFile):
    """A file opened for reading; its replicas are resolved once, at open."""

    def __init__(self, fs: CairnFileSystem, path: str, doc: Json, **kwargs: Any) -> None:
        self.doc = doc
        super().__init__(fs, path, mode="rb", size=int(doc["size"]), **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: CairnFileSystem = self.fs
        begin, stop = _bounds(start, end, int(self.doc["size"]))
        if begin >= stop:
            return b""
        data: bytes = sync(fs.loop, fs.read_range, self.doc, begin, stop)
        return data


def _bounds(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    begin = 0 if start is None else (max(0, size + start) if start < 0 else min(start, size))
    stop = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
    return begin, stop


def _timestamp(value: Any) -> float | None:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value).timestamp()
    return value.timestamp() if isinstance(value, dt.datetime) else None


def _as_info(entry: Json) -> Json:
    kind = "directory" if entry.get("type") == "directory" else "file"
    return {
        "name": entry["path"],
        "type": kind,
        "size": int(entry.get("size") or 0) if kind == "file" else 0,
        "adler32": entry.get("adler32"),
        "owner": entry.get("owner"),
        "group": entry.get("group"),
        "mode": entry.get("mode"),
        "mtime": _timestamp(entry.get("modified")),
    }

