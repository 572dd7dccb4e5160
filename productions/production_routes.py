"""HTTP routes of productions: create one from its spec (the YAML file's content), list, show,
status (progress per step), stop, start, delete. Same policies and ownership as transformations."""

from __future__ import annotations

from aiohttp import web

from kernel.db import Document
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes
from productions import production
from productions.owned_routes import add_action, listing_owner, mine
from productions.production_spec import ProductionSpec

routes = ApiRoutes("productions")

READ = scopes("jobs.read")
WRITE = scopes("jobs.write")
NOUN = "production"


async def _mine(request: web.Request) -> Document:
    return await mine(request, production.get, NOUN)


@routes.post("/productions", status=201, policy=WRITE, summary="Create a production: its steps, checked as a chain",
             body=ProductionSpec, responses={400: "invalid spec, a step that can never match, a cycle"})
async def add_production(request: web.Request) -> web.Response:
    spec = await read_model(request, ProductionSpec)
    doc = await production.create(request.app[DATABASE], principal_of(request), spec)
    return json_response(production.public_view(doc), status=201)


@routes.get("/productions", policy=READ, summary="Productions, newest first (yours; admins: anyone's)",
            query={"owner": "whose (admins)", "limit": "at most this many (default 100)"}, response=JsonList)
async def list_productions(request: web.Request) -> web.Response:
    found = await production.list_productions(request.app[DATABASE], listing_owner(request, "productions"),
                                              query_int(request, "limit", 100, minimum=1, maximum=10_000))
    return json_response([production.public_view(d) for d in found])


@routes.get("/productions/{id}", policy=READ, summary="A production and its steps",
            responses={404: "no such production", 403: "not yours"})
async def show_production(request: web.Request) -> web.Response:
    return json_response(production.public_view(await _mine(request)))


@routes.get("/productions/{id}/status", policy=READ,
            summary="A production's progress per step (files by status, tasks by state) and its status")
async def production_status(request: web.Request) -> web.Response:
    return json_response(await production.status(request.app[DATABASE], await _mine(request)))


add_action(routes, "POST", "/productions/{id}/stop", production.get, NOUN, production.stop,
           name="stop_production", policy=WRITE, summary="Stop every step (no data deleted)")
add_action(routes, "POST", "/productions/{id}/start", production.get, NOUN, production.start,
           name="start_production", policy=WRITE, summary="Resume a stopped production's stopped steps",
           responses={409: "not stopped"})
add_action(routes, "DELETE", "/productions/{id}", production.get, NOUN, production.delete,
           name="delete_production", policy=WRITE,
           summary="Delete a production: every step stopped, cleaned and deleted (no data deleted)")
