"""HTTP routes of productions: create one from its spec (the YAML file's content), list, show,
status (progress per step), stop. Same policies and ownership as transformations."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from catalogue.authorization import vo_query
from kernel.errors import Forbidden
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes
from productions import production, transformations
from productions.production_spec import ProductionSpec

routes = ApiRoutes("productions")

READ = scopes("jobs.read")
WRITE = scopes("jobs.write")


async def _mine(request: web.Request) -> dict[str, Any]:
    doc = await production.get(request.app[DATABASE], request.match_info["id"])
    transformations.check_owner(principal_of(request), doc, "production")
    return doc


@routes.post("/productions", status=201, policy=WRITE, summary="Create a production: its steps, checked as a chain",
             body=ProductionSpec, responses={400: "invalid spec, a step that can never match, a cycle"})
async def add_production(request: web.Request) -> web.Response:
    spec = await read_model(request, ProductionSpec)
    doc = await production.create(request.app[DATABASE], principal_of(request), spec)
    return json_response(production.public_view(doc), status=201)


@routes.get("/productions", policy=READ, summary="Productions, newest first (yours; admins: anyone's)",
            query={"owner": "whose (admins)", "limit": "at most this many (default 100)"}, response=JsonList)
async def list_productions(request: web.Request) -> web.Response:
    principal = principal_of(request)
    owner = request.query.get("owner")
    if not principal.is_admin:
        if owner not in (None, principal.sub):
            raise Forbidden("only admins may list other users' productions")
        owner = principal.sub
    found = await production.list_productions(request.app[DATABASE], owner,
                                              query_int(request, "limit", 100, minimum=1, maximum=10_000),
                                              vo_query(principal))
    return json_response([production.public_view(d) for d in found])


@routes.get("/productions/{id}", policy=READ, summary="A production and its steps",
            responses={404: "no such production", 403: "not yours"})
async def show_production(request: web.Request) -> web.Response:
    return json_response(production.public_view(await _mine(request)))


@routes.get("/productions/{id}/status", policy=READ,
            summary="A production's progress per step (files by status, tasks by state) and its status")
async def production_status(request: web.Request) -> web.Response:
    return json_response(await production.status(request.app[DATABASE], await _mine(request)))


@routes.post("/productions/{id}/stop", policy=WRITE, summary="Stop every step (no data deleted)")
async def stop_production(request: web.Request) -> web.Response:
    return json_response(await production.stop(request.app[DATABASE], await _mine(request)))
