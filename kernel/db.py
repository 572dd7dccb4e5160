"""The MongoDB connection: one `AsyncMongoClient` per process, and idempotent index creation.

Each package declares its indexes as `IndexSpec`s beside the queries that need them; whoever
assembles the process (server, daemon, CLI) passes them all to `ensure_indexes` once at start.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, NetworkTimeout, PyMongoError

from kernel.errors import ServiceUnavailable
from kernel.settings import Settings

Document = dict[str, Any]


@dataclass(frozen=True)
class IndexSpec:
    """One index of one collection, named so that queries can cite it."""

    collection: str
    keys: Sequence[tuple[str, int]]
    name: str
    unique: bool = False
    sparse: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def model(self) -> IndexModel:
        return IndexModel(list(self.keys), name=self.name, unique=self.unique, sparse=self.sparse, **self.options)


_client: AsyncMongoClient[Document] | None = None
_client_uri: str | None = None


def get_client(settings: Settings) -> AsyncMongoClient[Document]:
    """The process's one client (created on first use, reused afterwards)."""
    global _client, _client_uri
    if settings.mongodb_uri is None:
        raise ServiceUnavailable("no database configured: set CAIRN_MONGODB_URI or run `cairn up`")
    if _client is None or _client_uri != settings.mongodb_uri:
        _client = AsyncMongoClient(
            settings.mongodb_uri,
            serverSelectionTimeoutMS=settings.db_timeout_ms,
            connectTimeoutMS=settings.db_timeout_ms,
            tz_aware=True,
            appname="cairn",
        )
        _client_uri = settings.mongodb_uri
    return _client


def get_database(settings: Settings) -> AsyncDatabase[Document]:
    return get_client(settings)[settings.database]


async def close_client() -> None:
    global _client, _client_uri
    if _client is not None:
        await _client.close()
    _client = None
    _client_uri = None


async def ensure_indexes(db: AsyncDatabase[Document], specs: Iterable[IndexSpec]) -> None:
    """Create every declared index; existing ones with the same definition are left alone."""
    # One index per command: FerretDB 1.24 panics (and drops the connection) when one
    # createIndexes names several indexes of a collection that all exist already.
    for spec in specs:
        with database_errors():
            await db[spec.collection].create_indexes([spec.model()])


async def ping(db: AsyncDatabase[Document]) -> bool:
    """True when the database answers a ping within the configured timeout."""
    try:
        await db.command("ping")
    except PyMongoError:
        return False
    return True


UNAVAILABLE_ERRORS = (ConnectionFailure, AutoReconnect, NetworkTimeout, ExecutionTimeout)


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn 'the database is down' into ServiceUnavailable (503 with Retry-After)."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise ServiceUnavailable(f"database unavailable: {type(exc).__name__}", retry_after=5) from exc


async def iterate(cursor: Any) -> AsyncIterator[Document]:
    """Iterate a cursor with database errors mapped; for streaming responses."""
    with database_errors():
        async for doc in cursor:
            yield doc
