"""HTTP routes of provenance: a file's ancestors and descendants, and linking ancestors.

Relatives the caller cannot see are not revealed (`catalogue.authorization`)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue import provenance
from catalogue.authorization import READ_FILE, authorize_link, require_file, visible_files
from catalogue.lfn import check_lfn
from kernel.errors import InvalidInput
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes

routes = ApiRoutes("provenance")
READ_SCOPE = scopes("catalogue.read")
WRITE_SCOPE = scopes("catalogue.write")


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    ancestors: list[str] = Field(..., min_length=1, max_length=provenance.MAX_ANCESTORS)


class LinkAnswer(BaseModel):
    """What a link call did: counts, not the file's stored list (which can be long)."""

    lfn: str
    added: int = Field(description="ancestors the file did not hold before")
    already_linked: int = Field(description="given ancestors it held already")


@routes.get("/provenance", policy=READ_SCOPE, summary="Ancestors or descendants of a file, to a depth",
            query={"lfn": "the file", "direction": "ancestors (default) or descendants", "depth": "1..50 (1)"},
            responses={404: "no such file"})
async def related(request: web.Request) -> web.Response:
    lfn = check_lfn(request.query.get("lfn", ""))
    direction = request.query.get("direction", "ancestors")
    if direction not in ("ancestors", "descendants"):
        raise InvalidInput("direction is ancestors or descendants")
    depth = query_int(request, "depth", 1, minimum=1, maximum=provenance.MAX_DEPTH)
    db, principal = request.app[DATABASE], principal_of(request)
    await require_file(db, principal, lfn, READ_FILE)

    async def visible(lfns: Iterable[str]) -> set[str]:
        return await visible_files(db, principal, lfns)

    found = await provenance.walk(db, lfn, direction, depth, visible=visible)  # type: ignore[arg-type]
    return json_response({"lfn": lfn, "direction": direction, "depth": depth, "files": found})


@routes.post("/provenance/link", policy=WRITE_SCOPE, summary="Record the files a file was made from "
                                                             "(w on it, r on each)",
             body=LinkBody, response=LinkAnswer,
             responses={404: "no such file",
                        413: f"the file would hold more than {provenance.MAX_ANCESTORS:,} ancestors"})
async def link(request: web.Request) -> web.Response:
    body = await read_model(request, LinkBody)
    await authorize_link(request.app[DATABASE], principal_of(request), check_lfn(body.lfn), body.ancestors)
    return json_response(await provenance.link_ancestors(request.app[DATABASE], body.lfn, body.ancestors))
