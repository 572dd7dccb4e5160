"""HTTP routes of the namespace: mkdir, ls (paged and streamed), stat, mv, rm, chmod, chown.

Paths travel in query parameters and JSON bodies, never in the URL path, so no client or proxy
normalises `..` or `//` away before the LFN rules see them.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue import moves, namespace
from catalogue.lfn import check_lfn
from kernel import request_ids
from kernel.errors import InvalidInput
from kernel.web import (
    DATABASE,
    SETTINGS,
    ApiRoutes,
    json_response,
    principal_of,
    query_int,
    read_model,
    scopes,
    stream_ndjson,
)

routes = ApiRoutes("namespace")
READ = scopes("catalogue.read")
WRITE = scopes("catalogue.write")


class MkdirBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    parents: bool = False
    mode: int | None = Field(None, ge=0, le=0o777)


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    destination: str
    request_id: str | None = Field(None, pattern=request_ids.PATTERN, description=request_ids.DESCRIPTION)


class RemoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    recursive: bool = False


class ChmodBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    mode: int = Field(..., ge=0, le=0o777)


class ChownBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    owner: str | None = Field(None, min_length=1, max_length=128)
    group: str | None = Field(None, min_length=1, max_length=128)


def _path(request: web.Request) -> str:
    path = request.query.get("path")
    if path is None:
        raise InvalidInput("query parameter 'path' is required")
    return check_lfn(path)


def _after(request: web.Request) -> str | None:
    after = request.query.get("after")
    if after is not None and ("/" in after or not after):
        raise InvalidInput("'after' is an entry name from the previous page (no '/')")
    return after


@routes.post("/namespace/mkdir", status=201, policy=WRITE, summary="Create a directory (parents: like mkdir -p)",
             body=MkdirBody, responses={404: "parent missing", 409: "exists already or a file is in the way"})
async def mkdir(request: web.Request) -> web.Response:
    body = await read_model(request, MkdirBody)
    entry = await namespace.mkdir(request.app[DATABASE], principal_of(request), body.path, parents=body.parents,
                                  mode=body.mode)
    return json_response(entry, status=201)


@routes.get("/namespace/stat", policy=READ, summary="One directory or file (replicas, metadata: to a reader)",
            query={"path": "absolute path"}, responses={404: "no such entry"})
async def stat(request: web.Request) -> web.Response:
    return json_response(await namespace.stat(request.app[DATABASE], principal_of(request), _path(request)))


@routes.get("/namespace/ls", policy=READ, summary="One page of a directory, sorted by name",
            query={"path": "directory", "after": "last name of the previous page", "limit": "1..10000 (1000)"})
async def ls(request: web.Request) -> web.Response:
    page = await namespace.list_directory(
        request.app[DATABASE], principal_of(request), _path(request), after=_after(request),
        limit=query_int(request, "limit", 1000, minimum=1, maximum=10_000),
    )
    return json_response(page)


@routes.get("/namespace/ls/stream", policy=READ, summary="Every entry of a directory as NDJSON, sorted by name",
            query={"path": "directory", "after": "start after this name"}, streams=("application/x-ndjson",))
async def ls_stream(request: web.Request) -> web.StreamResponse:
    entries = await namespace.open_directory(
        request.app[DATABASE], principal_of(request), _path(request), after=_after(request)
    )
    return await stream_ndjson(request, entries)


@routes.post("/namespace/move", policy=WRITE, summary="Rename or move a file or a directory tree", body=MoveBody,
             responses={404: "source or destination directory missing", 409: "destination exists"})
async def move(request: web.Request) -> web.Response:
    body = await read_model(request, MoveBody)
    lease = dt.timedelta(seconds=request.app[SETTINGS].transfers.directory_move_lease_s)
    entry = await moves.move(request.app[DATABASE], principal_of(request), body.source, body.destination, lease=lease,
                             request_id=body.request_id)
    return json_response(entry)


@routes.post("/namespace/remove", policy=WRITE, summary="Remove a file, an empty directory, or a tree (admins)",
             body=RemoveBody, responses={404: "no such entry", 409: "directory not empty or file has replicas"})
async def remove(request: web.Request) -> web.Response:
    body = await read_model(request, RemoveBody)
    removed = await namespace.remove(request.app[DATABASE], principal_of(request), body.path,
                                     recursive=body.recursive)
    return json_response({"path": body.path, "removed": removed})


@routes.post("/namespace/chmod", policy=WRITE, summary="Set an entry's mode (owner or admin)", body=ChmodBody)
async def chmod(request: web.Request) -> web.Response:
    body = await read_model(request, ChmodBody)
    return json_response(await namespace.chmod(request.app[DATABASE], principal_of(request), body.path, body.mode))


@routes.post("/namespace/chown", policy=WRITE, summary="Set an entry's owner (admin) or group (owner)",
             body=ChownBody)
async def chown(request: web.Request) -> web.Response:
    body = await read_model(request, ChownBody)
    entry = await namespace.chown(request.app[DATABASE], principal_of(request), body.path, owner=body.owner,
                                  group=body.group)
    return json_response(entry)
