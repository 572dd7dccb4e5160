"""Triage of bad replicas (admins): a page of them by LFN, and removing the selected ones from
the catalogue the way POST /replicas/remove does (w on each file), so a rule re-creates them."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from cairn.portal.access import caller, page_size
from cairn.portal.render import page
from catalogue import file_routes as api
from catalogue import replica_triage, replicas
from catalogue.files import authorized_files
from catalogue.lfn import check_lfn
from catalogue.permissions import WRITE

routes = web.RouteTableDef()


@routes.get("/triage")
async def triage(request: web.Request) -> web.Response:
    db, _ = caller(request, api.routes, "GET", "/replicas/bad")
    after = request.query.get("after")
    found = await replica_triage.bad_replicas(db, se=request.query.get("se") or None,
                                              after=check_lfn(after) if after else None, limit=page_size(request))
    return page(request, "triage.html", {"found": found, "outcomes": request.query.getall("outcome", [])})


@routes.post("/triage/remove")
async def remove(request: web.Request) -> web.Response:
    """Remove each selected `LFN|SE` replica from the catalogue; the reply lists what happened."""
    caller(request, api.routes, "GET", "/replicas/bad")
    db, user = caller(request, api.routes, "POST", "/replicas/remove")
    form = await request.post()
    items = []
    for value in form.getall("replica", []):
        lfn, _, se = str(value).rpartition("|")
        items.append({"lfn": check_lfn(lfn), "se": se})
    _, refused = await authorized_files(db, user, [i["lfn"] for i in items], WRITE)
    result = await replicas.remove_replicas(db, [i for i in items if i["lfn"] not in refused])
    failed = {**result["failed"], **refused}
    outcomes = [f"{i['lfn']} on {i['se']}: " + (str(failed[i["lfn"]]) if i["lfn"] in failed else "removed")
                for i in items]
    raise web.HTTPSeeOther("/ui/triage?" + urlencode([("outcome", o) for o in outcomes]))
