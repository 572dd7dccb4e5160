"""HTTP routes of productions: create one from its spec (the YAML file's content), list, show,
status (progress per step), stop, start, delete. Same policies and ownership as transformations."""

from __future__ import annotations

from aiohttp import web

from kernel.db import Document
from kernel.web import DATABASE, ApiRoutes, json_response, scopes
from productions import production
from productions.owned_routes import add_action, add_creation, add_listing, mine
from productions.production_spec import ProductionSpec

routes = ApiRoutes("productions")

READ = scopes("jobs.read")
WRITE = scopes("jobs.write")
NOUN = "production"


async def _mine(request: web.Request) -> Document:
    return await mine(request, production.get, NOUN)


add_creation(routes, "/productions", ProductionSpec, production.create, production.public_view,
             name="add_production", policy=WRITE, summary="Create a production: its steps, checked as a chain",
             responses={400: "invalid spec, a step that can never match, a cycle"})
add_listing(routes, "/productions", "productions", production.list_productions, production.public_view,
            name="list_productions", policy=READ)


@routes.get("/productions/{id}", policy=READ, summary="A production and its steps",
            responses={404: "no such production (or not yours)"})
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
