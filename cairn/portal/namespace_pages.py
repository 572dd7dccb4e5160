"""Namespace browser (keyset-paged directory listing), file page, and the metadata query page."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cairn.portal.access import caller, page_size
from cairn.portal.render import page
from catalogue import metadata, namespace
from catalogue import metadata_routes as find_api
from catalogue import namespace_routes as api
from catalogue.find import file_view, open_query
from catalogue.lfn import ROOT, check_lfn
from kernel.errors import Forbidden, InvalidInput

routes = web.RouteTableDef()


def _crumbs(path: str) -> list[tuple[str, str]]:
    parts = [p for p in path.split("/") if p]
    return [(p, "/" + "/".join(parts[: i + 1])) for i, p in enumerate(parts)]


@routes.get("/browse")
async def browse(request: web.Request) -> web.Response:
    """One page of a directory (`after` is the last name of the previous page)."""
    db, user = caller(request, api.routes, "GET", "/namespace/ls")
    path = check_lfn(request.query.get("path") or ROOT)
    after = request.query.get("after") or None
    if after is not None and "/" in after:
        raise InvalidInput("'after' is an entry name from the previous page (no '/')")
    listing = await namespace.list_directory(db, user, path, after=after, limit=page_size(request))
    return page(request, "browse.html", {"path": path, "crumbs": _crumbs(path), "listing": listing})


@routes.get("/file")
async def file_page(request: web.Request) -> web.Response:
    """A file with its replicas and its effective metadata (or a directory's entry)."""
    db, user = caller(request, api.routes, "GET", "/namespace/stat")
    path = check_lfn(request.query.get("path") or ROOT)
    entry = await namespace.stat(db, user, path)
    try:  # metadata is reading the entry: without r the page leaves it out, as stat does
        meta: dict[str, Any] | None = await metadata.get_metadata(db, user, path)
    except Forbidden:
        meta = None
    return page(request, "file.html", {"path": path, "crumbs": _crumbs(path), "entry": entry, "meta": meta})


@routes.get("/find")
async def find(request: web.Request) -> web.Response:
    """Files matching a `cairn find` query below a directory, one page at a time."""
    query = request.query.get("q", "").strip()
    scope = request.query.get("path") or ROOT
    context: dict[str, Any] = {"q": query, "scope": scope, "rows": [], "next_after": None}
    if query:
        db, user = caller(request, find_api.routes, "POST", "/find")
        limit = page_size(request)
        results = await open_query(db, user, query, scope=check_lfn(scope),
                                   after=request.query.get("after") or None, limit=limit + 1)
        rows = [file_view(doc) async for doc in results]
        context["rows"] = rows[:limit]
        context["next_after"] = rows[limit - 1]["lfn"] if len(rows) > limit else None
    else:
        caller(request, find_api.routes, "POST", "/find")
    return page(request, "find.html", context)
