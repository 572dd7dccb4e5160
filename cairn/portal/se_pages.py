"""Storage elements and sites: usage and switches (admins flip them, as PATCH /ses/{name} does).

A page answers as its REST route does: a confined caller sees the SEs its VO uses (another is
a missing SE) with its own VO's path and switches only, and usage per SE, which counts every
VO's files, only when GET /usage/ses would give it (otherwise the pages leave it out).
"""

from __future__ import annotations

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from cairn.portal.access import caller, sees_installation
from cairn.portal.render import page
from catalogue import se_routes as api
from catalogue import sites, usage
from catalogue import usage_routes as usage_api
from catalogue.authorization import require_se, se_in_vo
from catalogue.storage_elements import (
    StorageElementUpdate,
    get_storage_element,
    list_storage_elements,
    shown_to,
    update_storage_element,
)
from kernel.db import Document
from kernel.principal import Principal

routes = web.RouteTableDef()
SWITCHES = ("read_enabled", "write_enabled", "delete_enabled")


async def _usage(db: AsyncDatabase[Document], user: Principal) -> dict[str, Document] | None:
    """Replicas and bytes per SE, or None for a caller GET /usage/ses refuses (a VO among several)."""
    if not sees_installation(user):
        return None
    return {row["se"]: row for row in await usage.se_usage(db)}


@routes.get("/ses")
async def se_list(request: web.Request) -> web.Response:
    """The SEs the user's VO uses (or one site's, or one kind's) with their switches, and their
    replicas and bytes when the user may see usage per SE."""
    db, user = caller(request, api.routes, "GET", "/ses")
    caller(request, usage_api.routes, "GET", "/usage/ses")
    ses = await list_storage_elements(db, site=request.query.get("site") or None,
                                      kind=request.query.get("kind") or None)
    shown = [shown_to(user, se) for se in ses if se_in_vo(user, se.name)]
    return page(request, "ses.html", {"ses": shown, "used": await _usage(db, user)})


@routes.get("/ses/{name}")
async def se_page(request: web.Request) -> web.Response:
    db, user = caller(request, api.routes, "GET", "/ses/{name}")
    se = await get_storage_element(db, require_se(user, request.match_info["name"]))
    used = await _usage(db, user)
    return page(request, "se.html", {"se": shown_to(user, se), "switches": SWITCHES,
                                     "used": None if used is None else used.get(se.name, {})})


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
    db, user = caller(request, api.routes, "GET", "/sites/{name}")
    site = await sites.get_site(db, request.match_info["name"], user)
    return page(request, "site.html", {"site": site, "used": await _usage(db, user)})
