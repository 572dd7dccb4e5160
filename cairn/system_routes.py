"""Routes about the service itself: health, the OpenAPI document, the issuer's keys, whoami."""

from __future__ import annotations

from aiohttp import web

from cairn import __version__
from kernel.db import ping
from kernel.openapi import build_openapi
from kernel.responses import Health, Whoami
from kernel.web import (
    AUTHENTICATED,
    DATABASE,
    ISSUER,
    PUBLIC,
    ROUTE_TABLES,
    ApiRoutes,
    json_response,
    principal_of,
)

routes = ApiRoutes("system")


@routes.get("/health", policy=PUBLIC, summary="Whether the API and its database answer",
            responses={503: "the database does not answer"}, response=Health)
async def health(request: web.Request) -> web.Response:
    db_ok = await ping(request.app[DATABASE])
    body = {"status": "ok" if db_ok else "degraded", "database": "ok" if db_ok else "unreachable",
            "version": __version__}
    if not db_ok:  # an error answer carries the ErrorBody fields like every other
        body |= {"code": "service_unavailable", "message": "the database does not answer"}
    response = json_response(body, status=200 if db_ok else 503)
    if not db_ok:
        response.headers["Retry-After"] = "5"
    return response


@routes.get("/openapi.json", policy=PUBLIC, summary="This API's OpenAPI 3 document")
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(request.app[ROUTE_TABLES], version=__version__))


@routes.get("/.well-known/jwks.json", policy=PUBLIC, summary="Public keys of the built-in token issuer")
async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[ISSUER].jwks())


@routes.get("/whoami", policy=AUTHENTICATED, summary="The identity and scopes of the caller's token",
            response=Whoami)
async def whoami(request: web.Request) -> web.Response:
    return json_response(principal_of(request).to_json())
