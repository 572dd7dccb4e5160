"""HTTP routes for storage elements and sites."""

from __future__ import annotations

from aiohttp import web

from catalogue.storage_elements import (
    StorageElement,
    get_storage_element,
    list_storage_elements,
    put_storage_element,
)
from kernel.errors import InvalidInput
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, read_model, scopes

routes = ApiRoutes("storage-elements")


@routes.get("/ses", policy=scopes("catalogue.read"), summary="List storage elements",
            query={"site": "only SEs of this site", "kind": "disk or tape"})
async def list_ses(request: web.Request) -> web.Response:
    ses = await list_storage_elements(
        request.app[DATABASE], site=request.query.get("site"), kind=request.query.get("kind")
    )
    return json_response([se.model_dump(mode="json") for se in ses])


@routes.get("/ses/{name}", policy=scopes("catalogue.read"), summary="One storage element",
            responses={404: "no such SE"})
async def get_se(request: web.Request) -> web.Response:
    se = await get_storage_element(request.app[DATABASE], request.match_info["name"])
    return json_response(se.model_dump(mode="json"))


@routes.put("/ses/{name}", policy=ADMIN, summary="Create or replace a storage element", body=StorageElement)
async def put_se(request: web.Request) -> web.Response:
    se = await read_model(request, StorageElement)
    if se.name != request.match_info["name"]:
        raise InvalidInput(f"body names SE {se.name!r} but the path names {request.match_info['name']!r}")
    await put_storage_element(request.app[DATABASE], se)
    return json_response(se.model_dump(mode="json"))
