"""What the routes of transformations and productions share: only the owner or an admin sees or
changes one (like jobs; they are no namespace objects), listings show the caller's own, and
the actions (`POST /{plural}/{id}/{action}`, `DELETE /{plural}/{id}`) all take the object and
answer what the action returns; creating one from its spec and listing them have one shape too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from catalogue.authorization import require_vo, vo_query
from kernel.db import Document
from kernel.errors import Forbidden, NotFound
from kernel.principal import Principal
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, Policy, json_response, principal_of, query_int, read_model

Getter = Callable[[Any, str], Awaitable[Document]]
Action = Callable[[Any, Document], Awaitable[Any]]
View = Callable[[Document], dict[str, Any]]


def check_owner(principal: Principal, doc: Document, noun: str) -> None:
    """Only its owner or an admin may see or change it; another user's (or VO's) answers like a
    missing one, so a refusal does not tell that it exists, nor whose it is."""
    require_vo(principal, doc, f"{noun} {doc['_id']} does not exist")
    if not principal.is_admin and doc["owner"] != principal.sub:
        raise NotFound(f"{noun} {doc['_id']} does not exist")


async def mine(request: web.Request, get: Getter, noun: str) -> Document:
    """The object the path's `{id}` names, if the caller may act on it (404 otherwise, as for a missing one)."""
    doc = await get(request.app[DATABASE], request.match_info["id"])
    check_owner(principal_of(request), doc, noun)
    return doc


def listing_owner(request: web.Request, plural: str) -> str | None:
    """Whose objects a listing shows: the caller's own; an admin's choice (`owner`, or all)."""
    principal = principal_of(request)
    owner = request.query.get("owner")
    if principal.is_admin:
        return owner
    if owner not in (None, principal.sub):
        raise Forbidden(f"only admins may list other users' {plural}")
    return principal.sub


def add_action(routes: ApiRoutes, method: str, path: str, get: Getter, noun: str, action: Action, *,
               name: str, policy: Policy, summary: str, responses: dict[int, str] | None = None) -> None:
    """A route that runs `action` on the caller's object and answers its result."""

    async def handler(request: web.Request) -> web.Response:
        return json_response(await action(request.app[DATABASE], await mine(request, get, noun)))

    handler.__name__ = name
    routes.route(method, path, policy=policy, summary=summary,
                 responses={404: f"no such {noun} (or not yours)", **(responses or {})})(handler)


def add_creation(routes: ApiRoutes, path: str, model: type[BaseModel],
                 create: Callable[[Any, Principal, Any], Awaitable[Document]], view: View, *,
                 name: str, policy: Policy, summary: str, responses: dict[int, str]) -> None:
    """`POST path`: create one from its spec (the body), owned by the caller; 201 with its view."""

    async def handler(request: web.Request) -> web.Response:
        spec = await read_model(request, model)
        return json_response(view(await create(request.app[DATABASE], principal_of(request), spec)), status=201)

    handler.__name__ = name
    routes.route("POST", path, status=201, policy=policy, summary=summary, body=model, responses=responses)(handler)


def add_listing(routes: ApiRoutes, path: str, plural: str,
                fetch: Callable[[Any, str | None, int, Document], Awaitable[list[Document]]], view: View, *,
                name: str, policy: Policy) -> None:
    """`GET path`: the caller's (an admin: anyone's), newest first."""

    async def handler(request: web.Request) -> web.Response:
        found = await fetch(request.app[DATABASE], listing_owner(request, plural),
                            query_int(request, "limit", 100, minimum=1, maximum=10_000),
                            vo_query(principal_of(request)))
        return json_response([view(d) for d in found])

    handler.__name__ = name
    routes.route("GET", path, policy=policy, summary=f"{plural.capitalize()}, newest first (yours; admins: anyone's)",
                 query={"owner": "whose (admins)", "limit": "at most this many (default 100)"},
                 response=JsonList)(handler)
