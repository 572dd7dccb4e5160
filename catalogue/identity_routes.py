"""HTTP routes of the user names' issuer bindings (`catalogue.identities`): admins list them,
bind a name to an issuer, forget a binding, or move an issuer's names to another."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue import identities
from catalogue.authorization import require_admin
from kernel.principal import Principal
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes

routes = ApiRoutes("identities")
READ = scopes("catalogue.read")
ADMINS_ONLY = "only an admin (of the installation, or of a VO for its names) manages identities"


class Binding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(..., min_length=1, max_length=identities.ISSUER_MAX,
                        description="the issuer (`iss`) whose tokens speak for the name")


class IssuerMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    old: str = Field(..., min_length=1, max_length=identities.ISSUER_MAX, alias="from")
    new: str = Field(..., min_length=1, max_length=identities.ISSUER_MAX, alias="to")


def _admin(request: web.Request) -> Principal:
    principal = principal_of(request)
    require_admin(principal, ADMINS_ONLY)
    return principal


@routes.get("/identities", policy=READ, summary="User names and the issuer each is bound to (admins)",
            query={"vo": "only this VO's names (global admins)", "issuer": "only this issuer's names",
                   "after": "names after this one (paging)", "limit": "at most this many (1-10000)"},
            response=JsonList)
async def list_identities(request: web.Request) -> web.Response:
    found = await identities.list_identities(
        request.app[DATABASE], _admin(request), vo=request.query.get("vo"), issuer=request.query.get("issuer"),
        after=request.query.get("after", ""), limit=query_int(request, "limit", 1000, minimum=1, maximum=10_000))
    return json_response([dict(i) for i in found])


@routes.put("/identities/{name}", policy=READ, body=Binding,
            summary="Bind a user name to an issuer: its tokens of other issuers are refused (admins)")
async def bind_identity(request: web.Request) -> web.Response:
    principal = _admin(request)
    body = await read_model(request, Binding)
    done = await identities.bind(request.app[DATABASE], principal, request.match_info["name"], body.issuer)
    return json_response(dict(done))


@routes.delete("/identities/{name}", policy=READ, responses={404: "the name is not bound (or of another VO)"},
               summary="Forget a name's binding: the next token naming it binds it to its issuer (admins)")
async def forget_identity(request: web.Request) -> web.Response:
    await identities.forget(request.app[DATABASE], _admin(request), request.match_info["name"])
    return json_response({"forgotten": request.match_info["name"]})


@routes.post("/identities/move", policy=READ, body=IssuerMove,
             summary="Bind every name of one issuer to another (an IdP replaced; admins, their VO's names)")
async def move_identities(request: web.Request) -> web.Response:
    principal = _admin(request)
    body = await read_model(request, IssuerMove)
    moved = await identities.move_issuer(request.app[DATABASE], principal, body.old, body.new)
    return json_response({"moved": moved})
