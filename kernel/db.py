"""The MongoDB connection: one `AsyncMongoClient` per process, and idempotent index creation.

Each package declares its indexes as `IndexSpec`s beside the queries that need them; whoever
assembles the process (server, daemon, CLI) passes them all to `ensure_indexes` once at start.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bson import Int64
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from kernel.documents import Document, IndexSpec, database_errors, one_reply, unavailable_errors
from kernel.errors import ServiceUnavailable
from kernel.settings import Settings

_client: AsyncMongoClient[Document] | None = None
_client_uri: str | None = None


class CommandCounter(monitoring.CommandListener):
    """Counts the database commands this process sends (a daemon reports them per unit of work,
    e.g. `cairn transfers stats`' DB commands per transferred file)."""

    def __init__(self) -> None:
        self.sent = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


COMMANDS = CommandCounter()

OutputDb = TypeVar("OutputDb", AsyncDatabase[Document], AsyncCollection[Document])


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
            event_listeners=[COMMANDS],
        )
        _client_uri = settings.mongodb_uri
    return _client


def get_database(settings: Settings) -> AsyncDatabase[Document]:
    return get_client(settings)[settings.database]


def for_output(db: OutputDb) -> OutputDb:
    """`db` (a database or a collection) decoding datetimes naive, for reads whose documents go
    out as JSON: kernel.jsonio writes a naive datetime as UTC, the same text as the aware one
    the client decodes otherwise, and bson decodes naive datetimes 4x faster than aware ones
    (a third of the API server's CPU when resolving 10k LFNs). Never compare what it reads with
    an aware datetime (a TypeError)."""
    return db.with_options(codec_options=db.codec_options.with_options(tz_aware=False))


async def close_client() -> None:
    global _client, _client_uri
    if _client is not None:
        await _client.close()
    _client = None
    _client_uri = None


async def ensure_indexes(db: AsyncDatabase[Document], specs: Iterable[IndexSpec]) -> None:
    """Create every declared index that does not exist yet, one at a time.

    One at a time because FerretDB 1.24 drops the connection when a multi-index createIndexes
    names indexes that already exist; asking only for the missing ones keeps restarts cheap.
    On a server that answers no query from a secondary index (`serves_secondary_indexes`), only
    the unique indexes are made, and those read under INDEX_ORDER where the server is Cairn's
    FerretDB build (`serves_index_order`): the others would cost every write and serve no read.
    An index kept only for GROUP_COUNT counts (`group_count` without `index_order`) is made on
    the build from its eleventh version, which reads it, and nowhere else. A `retired` index is
    dropped where it exists.
    """
    by_collection: dict[str, list[IndexSpec]] = {}
    for spec in specs:
        by_collection.setdefault(spec.collection, []).append(spec)
    secondary: bool | None = None
    for name, wanted in by_collection.items():
        with database_errors():
            existing = set(await db[name].index_information())
            for spec in wanted:
                if spec.retired:
                    if spec.name in existing:
                        await db[name].drop_index(spec.name)
                    continue
                if spec.name in existing:
                    continue
                if spec.group_count and not spec.index_order:
                    if await cairn_build_at(db) < 11:
                        continue
                elif not spec.unique:
                    if secondary is None:
                        secondary = await serves_secondary_indexes(db, name)
                    if not secondary and not (spec.index_order and await serves_index_order(db)):
                        continue
                await db[name].create_indexes([spec.model()])


async def serves_secondary_indexes(db: AsyncDatabase[Document], collection: str) -> bool:
    """Whether the server can answer a query on a field other than `_id` from an index: asked by
    explaining such a query on an existing collection. FerretDB's SQLite backend pushes only `_id`
    filters down to SQL (its explain says `filterPushdown: false`), so it never reads a secondary
    index; MongoDB, and FerretDB on PostgreSQL, do."""
    try:
        plan = await db.command("explain", {"find": collection, "filter": {"cairn_probe": "x"}},
                                verbosity="queryPlanner")
    except PyMongoError:
        return True
    return plan.get("filterPushdown") is not False


async def serves_index_order(db: AsyncDatabase[Document]) -> bool:
    """Whether the server reads INDEX_ORDER finds from the index they name: Cairn's FerretDB build
    from its tenth version on (`buildInfo`; MongoDB reads every index, so this is asked only of a
    server that serves no secondary index)."""
    return await cairn_build_at(db) >= 10


async def cairn_build_at(db: AsyncDatabase[Document]) -> int:
    """Which version of Cairn's FerretDB build the server is (`buildInfo`, asked once per client);
    0 for any other server."""
    return await _build_of(db.client) or 0


async def _build_of(client: Any) -> int | None:
    """`cairn_build` of the client's server, asked once per client (what `cairn_build_at` and
    `write_chunk` decide by)."""
    if client not in _builds:
        with database_errors():
            _builds[client] = cairn_build(await client.admin.command("buildInfo"))
    return _builds[client]


async def ping(db: AsyncDatabase[Document]) -> bool:
    """True when the database answers a ping within the configured timeout."""
    try:
        await db.command("ping")
    except PyMongoError:
        return False
    return True


UNAVAILABLE_ERRORS = unavailable_errors()


def increment(deltas: Mapping[str, int | float]) -> Document:
    """The `$inc` of counters, every integer as BSON Int64: a 32-bit value that `$inc` adds an
    int32 to wraps on FerretDB (2 GB + 2 GB = -294967296), while int32 + Int64 gives Int64 on
    every database. Every `$inc` in Cairn is built here."""
    return {"$inc": {name: Int64(value) if isinstance(value, int) else value for name, value in deltas.items()}}


async def count_by(collection: Any, fields: Sequence[str], *, absent: Mapping[str, Any] | None = None
                   ) -> list[Document]:
    """The collection's documents counted per combination of top-level `fields` (one `$group`):
    `[{field: value, ..., "n": count}]` (what monitoring reports), a field missing or null counted
    as `absent`'s value for it, else None (one row for all three). Under GROUP_COUNT, which Cairn's
    FerretDB build answers from an index whose first keys are `fields` in this order (an IndexSpec
    with `group_count`) while the values are strings or null."""
    with database_errors():
        cursor = await collection.aggregate([{"$group": {"_id": {f: f"${f}" for f in fields}, "n": {"$sum": 1}}}],
                                             comment=GROUP_COUNT)
        rows = await cursor.to_list()
    merged: dict[str, Document] = {}
    for row in rows:
        values = {f: (absent or {}).get(f) if row["_id"].get(f) is None else row["_id"][f] for f in fields}
        entry = merged.setdefault(repr(list(values.items())), {**values, "n": 0})
        entry["n"] += row["n"]
    return list(merged.values())


async def stamp_missing(collection: Any, name: str, value: Any) -> int:
    """Set field `name` to `value` on the documents that lack it (or hold null), in one
    `update_many`; how many changed. Run twice, the second changes nothing."""
    with database_errors():
        result = await collection.update_many({name: None}, {"$set": {name: value}})
    return int(result.modified_count)


async def iterate(cursor: Any) -> AsyncGenerator[Document, None]:
    """Iterate a cursor with database errors mapped; for streaming responses."""
    with database_errors():
        async for doc in cursor:
            yield doc


# FerretDB 1.24 as released never answers an `update` command of 100 or more statements that
# change existing documents (found with the usage counters; upserts that insert are not
# affected). MongoDB takes up to 100,000 per command, and so does the build Cairn installs (its
# sixth change, .ci/install-ferretdb, from v1.24.2-cairn.6 on). Bulk writes go in commands of
# WRITE_CHUNK, or of STOCK_FERRETDB_WRITE_CHUNK on a FerretDB without that fix (asked once per
# client, `buildInfo`): at 50 a transfer worker's cycle of 100-200 copies took 3-4 commands per step.
WRITE_CHUNK = 1000
STOCK_FERRETDB_WRITE_CHUNK = 50
_FIXED_FERRETDB = re.compile(r"-cairn\.(\d+)$")
_builds: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()  # _build_of's answers


def cairn_build(build_info: Mapping[str, Any]) -> int | None:
    """The number of Cairn's FerretDB build a server with this `buildInfo` runs (`-cairn.N`), 0 for
    another FerretDB, None for a server that is not FerretDB (MongoDB)."""
    version = str(build_info.get("ferretdbVersion") or "")
    if not version:
        return None
    fixed = _FIXED_FERRETDB.search(version)
    return int(fixed.group(1)) if fixed else 0


def write_chunk_for(build_info: Mapping[str, Any]) -> int:
    """The statements per write command a server with this `buildInfo` answers."""
    return _write_chunk_of(cairn_build(build_info))


def _write_chunk_of(build: int | None) -> int:
    return STOCK_FERRETDB_WRITE_CHUNK if build is not None and build < 6 else WRITE_CHUNK


async def write_chunk(collection: Any) -> int:
    """The statements per write command for collection's server (asked once per client)."""
    return _write_chunk_of(await _build_of(collection.database.client))


@dataclass
class BulkCounts:
    matched_count: int = 0
    modified_count: int = 0
    upserted_count: int = 0
    deleted_count: int = 0


async def bulk_write_chunked(collection: Any, operations: Sequence[Any], *, ordered: bool = False) -> BulkCounts:
    """`bulk_write` in commands of at most `write_chunk` operations, with the counts summed."""
    counts = BulkCounts()
    chunk = await write_chunk(collection) if operations else WRITE_CHUNK
    with database_errors():
        for start in range(0, len(operations), chunk):
            result = await collection.bulk_write(list(operations[start:start + chunk]), ordered=ordered)
            counts.matched_count += result.matched_count
            counts.modified_count += result.modified_count
            counts.upserted_count += result.upserted_count
            counts.deleted_count += result.deleted_count
    return counts


# One `_id $in` of 100,000 values took minutes on the embedded database; slices of READ_SLICE
# keep each query small and index-backed on MongoDB and FerretDB alike. READ_AHEAD slices are
# asked for at once, so the database reads the next slice while this process decodes one.
READ_SLICE = 1000
READ_AHEAD = 4


async def read_by_ids(collection: Any, ids: Iterable[Any], projection: Any = None, *,
                      flt: Mapping[str, Any] | None = None) -> AsyncGenerator[Document, None]:
    """The documents whose `_id` is among `ids` (and that match `flt`), one `$in` per READ_SLICE
    ids (the `_id` index), slice after slice, READ_AHEAD of them in flight. Each query is read to
    its end (no cursor stays open across slices). Every bulk read by `_id` goes through here."""
    wanted = sorted(set(ids))

    async def read(part: list[Any]) -> list[Document]:
        query = {"_id": {"$in": part}} if not flt else {"$and": [dict(flt), {"_id": {"$in": part}}]}
        docs: list[Document] = await collection.find(query, projection).limit(len(part)) \
            .batch_size(one_reply(len(part))).to_list()
        return docs

    parts = (wanted[start:start + READ_SLICE] for start in range(0, len(wanted), READ_SLICE))
    pending: deque[asyncio.Future[list[Document]]] = deque()
    try:
        with database_errors():
            for part in parts:
                pending.append(await read_ahead(read(part)))
                if len(pending) < READ_AHEAD:
                    continue
                for doc in await pending.popleft():
                    yield doc
            while pending:
                for doc in await pending.popleft():
                    yield doc
    finally:
        for task in pending:
            task.cancel()


# The comment by which a keyset page tells Cairn's FerretDB build that its `_id`s are strings
# whose JSON text sorts like the strings (LFNs, SE names): the build then reads `_id` ranges and
# `_id` order from the `_id` index instead of sorting the whole collection in memory
# (.ci/install-ferretdb). MongoDB only logs it.
ID_ORDER = "cairn:id-order"
# The comment by which a find tells Cairn's FerretDB build that the fields its filter compares with
# strings or booleans (at the top level) never hold arrays, that the strings it bounds (`$gt`...)
# sort like their JSON text, and that each field or dotted path it sorts by holds values of one
# kind whose JSON text sorts like them (strings as for ID_ORDER, integers of one number of
# digits, dates) and no array on the way: the build then reads those conditions and that order
# from an index that has them (a claim of the next 256 requests reads 256, not the queue).
# MongoDB only logs it.
INDEX_ORDER = "cairn:index-order"
# The comment by which an aggregate that counts documents per top-level fields (`count_by`) asks
# Cairn's FerretDB build (from its eleventh version) to count them in an index whose first keys
# are those fields, reading no document; it does where there is one and every value is a string,
# null or missing, and else groups the documents as without it (the caller promises nothing).
# MongoDB only logs it.
GROUP_COUNT = "cairn:group-count"
PAGE = 1000
# A streamed response's pages grow from FIRST_PAGE to STREAM_PAGE documents: a small first page
# answers at once, and large ones spread each query's fixed cost (on the embedded database, pages
# of 4000 documents read ~1.2x as many per second as pages of 1000).
FIRST_PAGE = 100
STREAM_PAGE = 4000


async def find_in_turn(collection: Any, queries: Iterable[Document], projection: Any = None, *,
                       limit: int = 0) -> list[Document]:
    """The documents of each query in turn, each read under INDEX_ORDER (so from its index, where
    one `$in` or `$or` of them would read every document on the embedded database), until `limit`
    are found (0: every one). The queries must keep INDEX_ORDER's promises."""
    found: list[Document] = []
    with database_errors():
        for query in queries:
            cursor = collection.find(query, projection, comment=INDEX_ORDER)
            found += await (cursor.limit(limit - len(found)) if limit else cursor).to_list()
            if limit and len(found) >= limit:
                break
    return found


# Values up to which `find_by_values` asks Cairn's FerretDB build before its fourteenth version
# one indexed find per value rather than one `$in` (which such a build answers by reading every
# document).
IN_TURN_MAX = 256
# The build from which a find that is one field's `$in` of strings, under INDEX_ORDER, is read
# from the field's index (one index seek per value, in one query).
INDEX_IN_BUILD = 14


async def find_by_values(collection: Any, field: str, values: Iterable[str], projection: Any = None
                         ) -> list[Document]:
    """The documents whose top-level string `field` (never an array) is one of `values`, from its
    index on any server: one `$in` per READ_SLICE values where the server reads secondary indexes,
    and on Cairn's FerretDB build from its fourteenth version (under INDEX_ORDER; the index must be
    declared `index_order`); on its builds 10-13, which read an index only for a find of one value,
    one such find per value, all at once, up to IN_TURN_MAX values (more are one `$in`: a read of
    every document there, cheaper than that many round trips)."""
    wanted = sorted(set(values))
    if not wanted:
        return []
    with database_errors():
        build = await cairn_build_at(collection.database)
        if build >= INDEX_IN_BUILD or build == 0:
            comment = INDEX_ORDER if build else None
            found: list[Document] = []
            for start in range(0, len(wanted), READ_SLICE):
                found += await collection.find({field: {"$in": wanted[start:start + READ_SLICE]}}, projection,
                                               comment=comment).to_list()
            return found
        if len(wanted) > IN_TURN_MAX or build < 10:
            return list(await collection.find({field: {"$in": wanted}}, projection).to_list())
        pages = await asyncio.gather(*(collection.find({field: value}, projection, comment=INDEX_ORDER).to_list()
                                       for value in wanted))
    return [doc for page in pages for doc in page]


def _within(flt: Mapping[str, Any], bounds: Mapping[str, Any]) -> Document:
    """`flt` AND `_id` within `bounds`, with the bounds as a top-level `$and` element (where the
    FerretDB build pushes `_id` conditions down)."""
    if not bounds:
        return dict(flt)
    if not flt:
        return {"_id": dict(bounds)}
    if list(flt) == ["$and"]:
        return {"$and": [*flt["$and"], {"_id": dict(bounds)}]}
    return {"$and": [dict(flt), {"_id": dict(bounds)}]}


async def page_by_id(
    collection: Any, flt: Mapping[str, Any], projection: Any = None, *, after: str | None = None,
    since: str | None = None, before: str | None = None, size: int | None = None,
) -> list[Document]:
    """One keyset page: up to `size` (PAGE) documents matching `flt` with `after < _id` (or
    `since <= _id`) and `_id < before`, in `_id` order: one query, a range scan of the `_id` index
    that stops after its documents."""
    size = size or PAGE
    bounds = {op: value for op, value in (("$gt", after), ("$gte", since), ("$lt", before)) if value is not None}
    with database_errors():
        return await collection.find(_within(flt, bounds), projection, comment=ID_ORDER).sort("_id", 1) \
            .limit(size).batch_size(one_reply(size)).to_list()


async def pages_by_id(
    collection: Any, flt: Mapping[str, Any], projection: Any = None, *, after: str | None = None,
    before: str | None = None, limit: int | None = None, page: int | None = None,
) -> AsyncIterator[Document]:
    """Every document matching `flt` with `after < _id < before`, in `_id` order, read by key:
    each page is one query `_id > last` sorted by `_id` with a limit (a range scan of the `_id`
    index), read to its end before the next, so no cursor stays open and memory holds one page
    (the previous one is released before the next is read).
    A document inserted behind the last key while the pages run is not returned; none is returned
    twice. Pages hold `page` documents (PAGE unless given)."""
    last, left, page = after, limit, page or PAGE
    while left is None or left > 0:
        size = page if left is None else min(page, left)
        docs = await page_by_id(collection, flt, projection, after=last, before=before, size=size)
        count, last = len(docs), docs[-1]["_id"] if docs else last
        docs.reverse()
        while docs:  # each document dropped as it is handed over; none held while the next page is read
            yield docs.pop()
        if count < size:
            return
        if left is not None:
            left -= count


async def read_ahead(read: Coroutine[Any, Any, list[Document]]) -> asyncio.Future[list[Document]]:
    """Start reading a page while the caller works on the previous one: the read runs for one
    turn of the event loop here, which sends its query when a pooled connection is free, so the
    database answers while the caller converts (started only as a task, the query left at the
    caller's next await, after its conversion, and the two never overlapped: `cairn se dump`
    18k -> 27k entries/s)."""
    task = asyncio.ensure_future(read)
    try:
        await asyncio.sleep(0)
    except BaseException:
        task.cancel()
        raise
    return task


async def stream_pages(
    collection: Any, flt: Mapping[str, Any], projection: Any = None, *, after: str | None = None,
    before: str | None = None, limit: int | None = None,
) -> AsyncIterator[list[Document]]:
    """What `pages_by_id` reads, as pages for a response that streams: pages start at FIRST_PAGE
    documents, so the first ones go out at once, and double up to STREAM_PAGE; the next page is
    read while the caller sends this one, so the database and the server work at once (memory
    holds two pages)."""
    left, size = limit, FIRST_PAGE if limit is None else min(FIRST_PAGE, limit)

    def read(start: str | None) -> Coroutine[Any, Any, list[Document]]:
        return page_by_id(collection, flt, projection, after=start, before=before, size=size)

    pending: asyncio.Future[list[Document]] | None = await read_ahead(read(after)) if size > 0 else None
    try:
        while pending is not None:
            docs = await pending
            pending = None
            left = None if left is None else left - len(docs)
            if len(docs) == size and (left is None or left > 0):
                size = min(2 * size, STREAM_PAGE, *([left] if left is not None else []))
                pending = await read_ahead(read(docs[-1]["_id"]))
            if docs:
                yield docs
    finally:
        if pending is not None:
            pending.cancel()
