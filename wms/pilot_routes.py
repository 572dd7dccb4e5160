"""HTTP routes for pilots: their documents (jobs.read) and their batch logs (admins).

A pilot document names its batch id, queue, site, state, exit code and the jobs it ran; a job
names its pilot and batch id (GET /jobs/{id}).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from catalogue.authorization import vo_query
from kernel.db import read_by_ids
from kernel.errors import InvalidInput
from kernel.principal import Principal
from kernel.responses import JsonList
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, query_int, scopes
from wms import pilot_records
from wms.jobs import JOBS

routes = ApiRoutes("pilots")
READ = scopes("jobs.read")
LOG_TAIL_BYTES = 64 * 1024


@routes.get("/pilots", policy=READ, summary="Pilots, newest first",
            query={"site": "only this site", "state": "only this state", "limit": "at most this many (100)"},
            response=JsonList)
async def list_pilots(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in pilot_records.STATES:
        raise InvalidInput(f"unknown pilot state {state!r}; states: {', '.join(pilot_records.STATES)}")
    limit = query_int(request, "limit", 100, minimum=1, maximum=10_000)
    found = await pilot_records.list_pilots(request.app[DATABASE], site=request.query.get("site") or None,
                                            state=state, limit=limit)
    views = [pilot_records.public_view(d) for d in found]
    return json_response(await _confine_jobs(request.app[DATABASE], principal_of(request), views))


@routes.get("/pilots/{name}", policy=READ, summary="A pilot: batch id, queue, site, state, its jobs",
            responses={404: "no such pilot"})
async def get_pilot(request: web.Request) -> web.Response:
    return json_response(await pilot_view(request.app[DATABASE], principal_of(request), request.match_info["name"]))


async def pilot_view(db: Any, principal: Principal, name: str) -> dict[str, Any]:
    """A pilot as its caller may see it: a pilot runs every VO's jobs, so a caller confined to a
    VO is shown only the jobs of its VO (API and portal alike)."""
    doc = await pilot_records.get_pilot(db, name)
    [view] = await _confine_jobs(db, principal, [pilot_records.public_view(doc)])
    return view


async def _confine_jobs(db: Any, principal: Principal, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pilots' views with only the jobs of the caller's VO (one read for all of them)."""
    if not principal.confined:
        return views
    ran = {job for view in views for job in view.get("jobs", [])}
    mine = {d["_id"] async for d in read_by_ids(db[JOBS], ran, {"_id": 1}, flt=vo_query(principal))}
    for view in views:
        view["jobs"] = [job for job in view.get("jobs", []) if job in mine]
    return views


@routes.get("/pilots/{name}/logs", policy=ADMIN, summary="The tail of a pilot's batch log",
            responses={404: "no such pilot"})
async def pilot_logs(request: web.Request) -> web.Response:
    doc = await pilot_records.get_pilot(request.app[DATABASE], request.match_info["name"])
    text = await asyncio.to_thread(_tail, Path(doc.get("log", "")))
    return json_response({"name": doc["_id"], "log": doc.get("log"), "text": text})


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
