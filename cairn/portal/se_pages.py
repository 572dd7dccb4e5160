"""Storage elements and sites: usage and switches (admins flip them, as PATCH /ses/{name} does)."""

from __future__ import annotations

from aiohttp import web

from cairn.portal.access import caller
from cairn.portal.render import page
from catalogue import se_routes as api
from catalogue import sites, usage
from catalogue import usage_routes as usage_api
from catalogue.storage_elements import (
    StorageElementUpdate,
    get_storage_element,
    list_storage_elements,
    update_storage_element,
)

routes = web.RouteTableDef()
SWITCHES = ("read_enabled", "write_enabled", "delete_enabled")


@routes.get("/ses")
async def se_list(request: web.Request) -> web.Response:
    """Every SE (or one site's, or one kind's) with its replicas and bytes and its switches."""
    db, _ = caller(request, api.routes, "GET", "/ses")
    caller(request, usage_api.routes, "GET", "/usage/ses")
    ses = await list_storage_elements(db, site=request.query.get("site") or None,
                                      kind=request.query.get("kind") or None)
    used = {row["se"]: row for row in await usage.se_usage(db)}
    return page(request, "ses.html", {"ses": [se.model_dump(mode="json") for se in ses], "used": used})


@routes.get("/ses/{name}")
async def se_page(request: web.Request) -> web.Response:
    db, _ = caller(request, api.routes, "GET", "/ses/{name}")
    se = await get_storage_element(db, request.match_info["name"])
    used = {row["se"]: row for row in await usage.se_usage(db)}.get(se.name)
    return page(request, "se.html", {"se": se.model_dump(mode="json"), "used": used, "switches": SWITCHES})


@routes.post("/ses/{name}/switches")
async def switch(request: web.Request) -> web.Response:
    """Set the read/write/delete switches from the form (checkboxes: absent means off)."""
    db, _ = caller(request, api.routes, "PATCH", "/ses/{name}")
    form = await request.post()
    update = StorageElementUpdate.model_validate({name: name in form for name in SWITCHES})
    await update_storage_element(db, request.match_info["name"], update)
    raise web.HTTPSeeOther(f"/ui/ses/{request.match_info['name']}")


@routes.get("/sites/{name}")
async def site_page(request: web.Request) -> web.Response:
    db, _ = caller(request, api.routes, "GET", "/sites/{name}")
    site = await sites.get_site(db, request.match_info["name"])
    used = {row["se"]: row for row in await usage.se_usage(db)}
    return page(request, "site.html", {"site": site, "used": used})
