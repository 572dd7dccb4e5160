"""HTTP routes for storage elements and sites (reading: catalogue.read; changing: admins)."""

from __future__ import annotations

from aiohttp import web

from catalogue import sites
from catalogue.authorization import require_se, se_in_vo
from catalogue.sites import Site
from catalogue.storage_elements import (
    StorageElement,
    StorageElementList,
    StorageElementUpdate,
    delete_storage_element,
    get_storage_element,
    list_storage_elements,
    put_storage_element,
    shown_to,
    update_storage_element,
)
from kernel.errors import InvalidInput
from kernel.responses import JsonList
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, read_model, scopes

routes = ApiRoutes("storage-elements")
READ = scopes("catalogue.read")


@routes.get("/ses", policy=READ, summary="List storage elements",
            query={"site": "only SEs of this site", "kind": "disk or tape"}, response=StorageElementList)
async def list_ses(request: web.Request) -> web.Response:
    ses = await list_storage_elements(
        request.app[DATABASE], site=request.query.get("site"), kind=request.query.get("kind")
    )
    principal = principal_of(request)
    return json_response([shown_to(principal, se) for se in ses if se_in_vo(principal, se.name)])


@routes.get("/ses/{name}", policy=READ, summary="One storage element", responses={404: "no such SE"},
            response=StorageElement)
async def get_se(request: web.Request) -> web.Response:
    principal = principal_of(request)
    se = await get_storage_element(request.app[DATABASE], require_se(principal, request.match_info["name"]))
    return json_response(shown_to(principal, se))


@routes.put("/ses/{name}", policy=ADMIN, summary="Create or replace a storage element", body=StorageElement,
            response=StorageElement)
async def put_se(request: web.Request) -> web.Response:
    se = await read_model(request, StorageElement)
    if se.name != request.match_info["name"]:
        raise InvalidInput(f"body names SE {se.name!r} but the path names {request.match_info['name']!r}")
    await put_storage_element(request.app[DATABASE], se)
    return json_response(se.model_dump(mode="json"))


@routes.patch("/ses/{name}", policy=ADMIN, summary="Switch reads/writes/deletes, set space or attributes",
              body=StorageElementUpdate, responses={404: "no such SE"}, response=StorageElement)
async def patch_se(request: web.Request) -> web.Response:
    update = await read_model(request, StorageElementUpdate)
    se = await update_storage_element(request.app[DATABASE], request.match_info["name"], update)
    return json_response(se.model_dump(mode="json"))


@routes.delete("/ses/{name}", policy=ADMIN, summary="Remove a storage element that holds no replica",
               responses={404: "no such SE", 409: "it still holds replicas"})
async def delete_se(request: web.Request) -> web.Response:
    await delete_storage_element(request.app[DATABASE], request.match_info["name"])
    return json_response({"name": request.match_info["name"], "deleted": True})


@routes.get("/sites", policy=READ, summary="List sites", response=JsonList)
async def list_sites(request: web.Request) -> web.Response:
    return json_response([s.model_dump() for s in await sites.list_sites(request.app[DATABASE])])


@routes.get("/sites/{name}", policy=READ, summary="One site with its local SEs", responses={404: "no such site"})
async def get_site(request: web.Request) -> web.Response:
    return json_response(await sites.get_site(request.app[DATABASE], request.match_info["name"], principal_of(request)))


@routes.put("/sites/{name}", policy=ADMIN, summary="Create or replace a site", body=Site)
async def put_site(request: web.Request) -> web.Response:
    site = await read_model(request, Site)
    if site.name != request.match_info["name"]:
        raise InvalidInput(f"body names site {site.name!r} but the path names {request.match_info['name']!r}")
    return json_response((await sites.put_site(request.app[DATABASE], site)).model_dump())


@routes.delete("/sites/{name}", policy=ADMIN, summary="Remove a site that has no SE",
               responses={404: "no such site", 409: "it still has SEs"})
async def delete_site(request: web.Request) -> web.Response:
    await sites.delete_site(request.app[DATABASE], request.match_info["name"])
    return json_response({"name": request.match_info["name"], "deleted": True})
