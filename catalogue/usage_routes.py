"""HTTP routes of usage accounting (per directory, per SE, admin rebuild) and of SE dumps."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from catalogue import directory_move_repair, move_counts, usage
from catalogue.authorization import authorize_directory_usage, require_installation_view
from catalogue.lfn import check_lfn
from catalogue.replica_dump import open_dump
from catalogue.streaming import stream_rows
from catalogue.tabular import REPLICA_SCHEMA
from kernel.errors import Conflict
from kernel.responses import JsonList, RebuildBody
from kernel.web import ADMIN, DATABASE, SETTINGS, ApiRoutes, json_response, principal_of, read_model, scopes

routes = ApiRoutes("usage")
READ = scopes("catalogue.read")


@routes.get("/usage/directory", policy=READ, summary="Files and bytes below a directory (recursive; r and x on it)",
            query={"path": "directory"}, responses={404: "no such directory (or one the caller cannot see)"})
async def directory(request: web.Request) -> web.Response:
    path = check_lfn(request.query.get("path", ""))
    db = request.app[DATABASE]
    principal = principal_of(request)
    await authorize_directory_usage(db, principal, path)
    # another VO's data below it is that VO's to count: left out, as the VO's own usage does
    return json_response(await usage.directory_usage(db, path, principal.foreign_roots))


@routes.get("/usage/ses", policy=READ, summary="Replicas and bytes per SE", response=JsonList)
async def ses(request: web.Request) -> web.Response:
    require_installation_view(principal_of(request), "usage per SE")
    return json_response(await usage.se_usage(request.app[DATABASE]))


@routes.post("/usage/rebuild", policy=ADMIN, summary="Recount usage from the records; report (and fix) drift",
             responses={409: "a directory move is under way"},
             body=RebuildBody)
async def rebuild(request: web.Request) -> web.Response:
    body = await read_model(request, RebuildBody)
    db = request.app[DATABASE]
    if body.fix:  # half-done moves of dead calls finished or taken back first: the recount drops their claims
        transfers = request.app[SETTINGS].transfers
        await move_counts.settle_stale(db, transfers.usage_settle_after_s)
        await directory_move_repair.settle_stale(db, transfers.usage_settle_after_s,
                                                 dt.timedelta(seconds=transfers.directory_move_lease_s))
        if moving := await directory_move_repair.under_way(db):  # it moves its tree's counts once it is done
            raise Conflict(f"{len(moving)} directory move(s) under way (e.g. of {moving[0]}); rebuild once they "
                           "ended (one cut short is finished by the transfer workers once its lease is out)")
    return json_response(await usage.rebuild(db, fix=body.fix))


@routes.get("/ses/{name}/dump", policy=ADMIN, summary="Every replica on an SE (NDJSON, Arrow or Parquet)",
            query={"format": "json, arrow or parquet"}, responses={404: "no such SE"},
            streams=("application/x-ndjson", "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"))
async def dump(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    rows = await open_dump(request.app[DATABASE], name)
    return await stream_rows(request, rows, view=dict, schema=REPLICA_SCHEMA, fmt=request.query.get("format"),
                             filename=f"{name}-dump")
