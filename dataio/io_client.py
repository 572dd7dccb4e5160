"""The client side of moving bytes: the catalogue calls, a server-signed URL, and the storage
plugins the client opens. Each client owns its plugins (their HTTP sessions and connection
pools) and closes them with itself, so a process ends with nothing left open."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from catalogue.client import CatalogueClient

if TYPE_CHECKING:
    from storage_plugins.base import StoragePlugin


class IOClient(CatalogueClient):
    """What upload and download need of the client (`dataio.client.DataClient` adds them)."""

    def __init__(self, url: str | None = None, token: str | None = None, **kw: Any) -> None:
        super().__init__(url, token, **kw)
        self._plugins: dict[str, StoragePlugin] = {}

    async def signed_url(self, lfn: str, se: str, method: str = "GET", *, lifetime_s: int = 3600) -> dict[str, Any]:
        """A URL the server signed for method on lfn's replica on S3 SE se (no S3 secrets needed)."""
        body = {"lfn": lfn, "se": se, "method": method, "lifetime_s": lifetime_s}
        result: dict[str, Any] = await self.request("POST", "/storage/signed-url", json_body=body)
        return result

    async def discard_stored(self, lfn: str, se: str, writer: str | None = None) -> dict[str, Any]:
        """The server deletes what this client wrote for lfn's `copying` replica on S3 SE se
        through a signed URL (a failed upload's undo; nothing there is fine), while upload
        `writer` holds that replica (without it: while no writer does)."""
        body = {"lfn": lfn, "se": se, **({"writer": writer} if writer is not None else {})}
        result: dict[str, Any] = await self.request("POST", "/storage/discard", json_body=body)
        return result

    async def hold_replicas(self, writer: str, se: str, lfns: list[str], *, renew: bool = False) -> dict[str, Any]:
        """Take or renew upload `writer`'s lease on the `copying` replicas of lfns on SE se
        (`catalogue.upload_leases`; with `renew`, only renew); answers per LFN."""
        body: dict[str, Any] = {"writer": writer, "replicas": [{"lfn": lfn, "se": se} for lfn in lfns]}
        if renew:
            body["renew"] = True
        result: dict[str, Any] = await self.request("POST", "/replicas/hold", json_body=body)
        return result

    async def undo_replicas(self, writer: str, se: str, lfns: list[str]) -> dict[str, Any]:
        """Remove the replicas of lfns on SE se that upload `writer` still holds, each with the
        record it founded when that is its only replica (`catalogue.upload_undos`); per LFN."""
        body = {"writer": writer, "se": se, "lfns": lfns}
        result: dict[str, Any] = await self.request("POST", "/replicas/undo", json_body=body)
        return result

    def plugin(self, url: str, options: Mapping[str, Any] | None = None) -> StoragePlugin:
        """The storage plugin serving url with options: this client's own, shared by its calls
        alike, closed by `close`."""
        from storage_plugins.registry import plugin_class, scheme_of  # not on the SDK's import path

        cls = plugin_class(scheme_of(url))
        key = f"{cls.__module__}.{cls.__qualname__} {json.dumps(dict(options or {}), sort_keys=True, default=str)}"
        plugin = self._plugins.get(key)
        if plugin is None:
            plugin = self._plugins[key] = cls(options)
        return plugin

    async def close(self) -> None:
        """Close the storage plugins this client opened, then its API session."""
        plugins, self._plugins = list(self._plugins.values()), {}
        try:
            for plugin in plugins:
                await plugin.close()
        finally:
            await super().close()
