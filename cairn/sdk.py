"""The Python SDK: `Client` (async) and `SyncClient` (blocking wrapper) over the HTTP API.

    async with Client() as c:            # URL and token from $CAIRN_API_URL/$CAIRN_TOKEN or ./var
        print(await c.whoami())

    SyncClient().whoami()
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from catalogue.client import CatalogueClient
from catalogue.metadata_client import MetadataClient
from dataio.client import DataClient
from kernel import event_loop
from kernel.client import BaseClient
from kernel.revocation_client import RevocationClient
from productions.client import TransformationsClient
from rules.client import RulesClient
from transfers.audit_client import AuditClient
from transfers.client import TransfersClient
from wms.client import JobsClient


class Client(DataClient, JobsClient, TransformationsClient, CatalogueClient, MetadataClient, RulesClient,
             TransfersClient, AuditClient, RevocationClient, BaseClient):
    """Every API call Cairn offers, as async methods."""

    async def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/whoami")
        return result


class SyncClient:
    """The same calls as `Client`, blocking; async generators come back as lists."""

    def __init__(self, url: str | None = None, token: str | None = None, **kw: Any) -> None:
        self._loop = event_loop.new_loop()
        self._client = Client(url, token, **kw)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if inspect.iscoroutinefunction(attr):
            @functools.wraps(attr)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._loop.run_until_complete(attr(*args, **kwargs))
            return call
        if inspect.isasyncgenfunction(attr):
            @functools.wraps(attr)
            def collect(*args: Any, **kwargs: Any) -> list[Any]:
                async def gather() -> list[Any]:
                    return [item async for item in attr(*args, **kwargs)]
                return self._loop.run_until_complete(gather())
            return collect
        return attr
