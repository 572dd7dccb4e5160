"""Running metadata queries: one MongoDB `find` per query, streamed, with read permissions.

The filter is the compiled query AND the scope (an `_id` range). Results are read in keyset
pages sorted by LFN (`kernel.db.stream_pages`), so a client can page with `after` and the
database never sorts more than a page. On
MongoDB a selective query uses the index of a declared field (`meta_<key>` on
`meta_effective.<key>`); the scope and the other conditions filter within it.

Read permission is POSIX-like: a file is returned when the caller may read it (r on the file,
x on every directory above it). The query itself is never widened or narrowed in Python; the
ACL check runs per page with the page's unseen ancestor directories fetched by one
`_id $in` (admins skip it). The scope directory must be readable (r and x) by the caller; one
it cannot reach answers like a missing one (404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from catalogue.collection_names import FILES
from catalogue.directories import fetch_directories
from catalogue.lfn import ROOT, ancestors, check_lfn
from catalogue.meta_query import compile_query
from catalogue.metadata_fields import EFFECTIVE, declared_fields, query_fields
from catalogue.permissions import EXECUTE, READ, ROOT_ENTRY, entry_denial, require, traversal_denial
from kernel.db import Document, database_errors, for_output, stream_pages
from kernel.errors import NotFound
from kernel.principal import Principal

PROJECTION = {"meta": 0, "meta_origin": 0, "version": 0}


def file_view(doc: Document) -> dict[str, Any]:
    """A query result: the file's standard fields, its effective metadata and its SEs."""
    return {
        "lfn": doc["_id"], "size": doc.get("size"), "adler32": doc.get("adler32"), "md5": doc.get("md5"),
        "guid": doc.get("guid"), "owner": doc.get("owner"), "group": doc.get("group"), "mode": doc.get("mode"),
        "status": doc.get("status"), "created": doc.get("created"), "modified": doc.get("modified"),
        "meta": doc.get(EFFECTIVE) or {}, "ses": [r["se"] for r in doc.get("replicas", [])],
        "ancestors": doc.get("ancestors", []),
    }


def scope_bounds(scope: str, after: str | None = None) -> tuple[str | None, str | None]:
    """The `_id` bounds (both exclusive) of the files below `scope` after the LFN `after`:
    `scope/` .. `scope0` ('0' follows '/'), a range of the `_id` index."""
    low, high = (None, None) if scope == ROOT else (scope + "/", scope + "0")
    if after is not None and (low is None or check_lfn(after) > low):
        low = after
    return low, high


async def query_filter(db: AsyncDatabase[Document], query: str, scope: str = ROOT,
                       after: str | None = None, *, principal: Principal | None = None) -> dict[str, Any]:
    """The single MongoDB filter of `query` within `scope` (and after an LFN, for paging), typed
    by the fields `principal` is shown (`query_fields`), or every declared field without one."""
    check_lfn(scope)
    fields = await (query_fields(db, principal) if principal is not None else declared_fields(db))
    parts = [compile_query(query, fields)]
    low, high = scope_bounds(scope, after)
    bounds = {op: value for op, value in (("$gt", low), ("$lt", high)) if value is not None}
    if bounds:
        parts.append({"_id": bounds})
    return parts[0] if len(parts) == 1 else {"$and": parts}


async def _check_scope(db: AsyncDatabase[Document], principal: Principal, scope: str) -> None:
    if scope == ROOT and principal.confined:
        return  # the whole namespace, for a caller confined to a VO: its VO's roots (`_vo_roots`)
    if scope == ROOT:
        require(entry_denial(principal, scope, ROOT_ENTRY, READ | EXECUTE, {}), scope)
        return
    dirs = await fetch_directories(db, [*ancestors(scope), scope])
    if scope not in dirs or traversal_denial(principal, scope, dirs):
        raise NotFound(f"directory {scope} does not exist")  # hidden answers like missing
    require(entry_denial(principal, scope, dirs[scope], READ | EXECUTE, dirs), scope)


def _vo_roots(principal: Principal) -> dict[str, Any]:
    """The LFNs below the caller's VO roots (another VO's roots nested there are left out per
    file, by `entry_denial`)."""
    ranges = [{"_id": {"$gt": low, "$lt": high}} for low, high in map(scope_bounds, principal.roots)]
    return {"$or": ranges or [{"_id": None}]}


async def _readable(db: AsyncDatabase[Document], principal: Principal, docs: list[Document],
                    cache: dict[str, Document]) -> list[Document]:
    if principal.is_global_admin:
        return docs
    unseen = {a for d in docs for a in ancestors(d["_id"]) if a != ROOT and a not in cache}
    if unseen:
        cache.update(await fetch_directories(db, unseen))
        if len(cache) > 50_000:  # bound memory on huge scans; refetching is cheap
            cache.clear()
            cache.update(await fetch_directories(db, {a for d in docs for a in ancestors(d["_id"])}))
    return [d for d in docs if entry_denial(principal, d["_id"], d, READ, cache) is None]


async def check_query(db: AsyncDatabase[Document], principal: Principal, query: str,
                      scope: str = ROOT) -> dict[str, Any]:
    """The compiled query, once the checks of `open_query` pass: it compiles, typed by the
    caller's fields (400), and the caller may read the scope directory (404 when missing or
    hidden, 403 without r and x). What a dynamic dataset must pass before it is created."""
    check_lfn(scope)
    flt = compile_query(query, await query_fields(db, principal))
    await _check_scope(db, principal, scope)
    return flt


async def open_query(
    db: AsyncDatabase[Document], principal: Principal, query: str, *, scope: str = ROOT,
    after: str | None = None, limit: int | None = None,
) -> AsyncIterator[Document]:
    """Check the query and the scope now (so errors come before a response starts), then return
    the stream of matching file records the caller may read, sorted by LFN, read page by page."""
    flt = await check_query(db, principal, query, scope)
    low, high = scope_bounds(scope, after)
    if scope == ROOT and principal.confined and ROOT not in principal.roots:
        flt = {"$and": [flt, _vo_roots(principal)]}

    async def results() -> AsyncIterator[Document]:
        cache: dict[str, Document] = {}
        pages = stream_pages(for_output(db[FILES]), flt, PROJECTION, after=low, before=high, limit=limit)
        async for page in pages:
            for allowed in await _readable(db, principal, page, cache):
                yield allowed

    return results()


async def explain_query(db: AsyncDatabase[Document], query: str, scope: str = ROOT) -> dict[str, Any]:
    """The database's explain of the query (executionStats where the server gives them)."""
    flt = await query_filter(db, query, scope)
    with database_errors():
        try:
            result: dict[str, Any] = await db.command(
                {"explain": {"find": FILES, "filter": flt, "sort": {"_id": 1}}, "verbosity": "executionStats"})
        except OperationFailure:  # FerretDB's explain takes fewer options
            result = await db[FILES].find(flt).sort("_id", 1).explain()
    return result

