"""What a collection's documents and indexes are, without the database driver: modules that
declare them (models also used by the SDK and the CLI) import this, not `kernel.db`, so a
client process does not load PyMongo and the server settings it never uses."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kernel.errors import ServiceUnavailable

if TYPE_CHECKING:
    from pymongo import IndexModel

Document = dict[str, Any]


def aware(at: dt.datetime) -> dt.datetime:
    """A stored date in UTC, as a client without `tz_aware` reads it too (naive: UTC)."""
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class IndexSpec:
    """One index of one collection, named so that queries can cite it."""

    collection: str
    keys: Sequence[tuple[str, int]]
    name: str
    unique: bool = False
    sparse: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    # Read under `kernel.db.INDEX_ORDER` (equalities on its first keys, sorted by the rest): Cairn's
    # FerretDB build answers such reads from this index, so it is made there too (`ensure_indexes`).
    index_order: bool = False
    # Counted under `kernel.db.GROUP_COUNT` (`count_by` over its first keys, in order): Cairn's
    # FerretDB build answers those counts from this index, reading no document, so it is made
    # there (`ensure_indexes`); MongoDB groups without reading an index, so it is made nowhere else.
    group_count: bool = False
    # An index an earlier version made and this one no longer reads: `ensure_indexes` drops it
    # where it finds it (it cost every write and served nothing).
    retired: bool = False

    def model(self) -> IndexModel:
        from pymongo import IndexModel

        return IndexModel(list(self.keys), name=self.name, unique=self.unique, sparse=self.sparse, **self.options)


def unavailable_errors() -> tuple[type[Exception], ...]:
    """The driver's errors that mean "the database is down" (the driver loads on first call)."""
    from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, NetworkTimeout

    return (ConnectionFailure, AutoReconnect, NetworkTimeout, ExecutionTimeout)


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn 'the database is down' into ServiceUnavailable (503 with Retry-After)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, unavailable_errors()):
            raise ServiceUnavailable(f"database unavailable: {type(exc).__name__}", retry_after=5) from exc
        raise


def one_reply(limit: int) -> int:
    """The batch size that returns a read of at most `limit` documents in one reply and closes
    its cursor there: a first batch exactly full leaves the cursor open (MongoDB and FerretDB
    alike), and the driver then sent a getMore that found nothing, or a killCursors."""
    return limit + 1
