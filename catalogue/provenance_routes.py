"""HTTP routes of provenance: a file's ancestors and descendants, and linking ancestors."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue import provenance
from catalogue.files import authorized_files
from catalogue.lfn import check_lfn
from catalogue.permissions import READ, WRITE
from kernel.errors import Forbidden, InvalidInput, NotFound
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes

routes = ApiRoutes("provenance")
READ_SCOPE = scopes("catalogue.read")
WRITE_SCOPE = scopes("catalogue.write")


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    ancestors: list[str] = Field(..., min_length=1, max_length=10_000)


async def _permitted(request: web.Request, lfn: str, bits: int) -> None:
    _, failed = await authorized_files(request.app[DATABASE], principal_of(request), [lfn], bits)
    if lfn in failed:
        reason = failed[lfn]
        raise NotFound(f"file {lfn} does not exist") if reason == "no such file" else Forbidden(reason)


@routes.get("/provenance", policy=READ_SCOPE, summary="Ancestors or descendants of a file, to a depth",
            query={"lfn": "the file", "direction": "ancestors (default) or descendants", "depth": "1..50 (1)"},
            responses={404: "no such file"})
async def related(request: web.Request) -> web.Response:
    lfn = check_lfn(request.query.get("lfn", ""))
    direction = request.query.get("direction", "ancestors")
    if direction not in ("ancestors", "descendants"):
        raise InvalidInput("direction is ancestors or descendants")
    depth = query_int(request, "depth", 1, minimum=1, maximum=provenance.MAX_DEPTH)
    await _permitted(request, lfn, READ)
    found = await provenance.walk(request.app[DATABASE], lfn, direction, depth)  # type: ignore[arg-type]
    return json_response({"lfn": lfn, "direction": direction, "depth": depth, "files": found})


@routes.post("/provenance/link", policy=WRITE_SCOPE, summary="Record the files a file was made from (w on it)",
             body=LinkBody, responses={404: "no such file"})
async def link(request: web.Request) -> web.Response:
    body = await read_model(request, LinkBody)
    await _permitted(request, check_lfn(body.lfn), WRITE)
    return json_response(await provenance.link_ancestors(request.app[DATABASE], body.lfn, body.ancestors))
