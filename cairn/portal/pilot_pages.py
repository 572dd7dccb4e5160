"""Pilots beside their jobs: pilots filtered by site, queue and state (keyset-paged), a pilot with
the jobs it ran, through the checks of the /pilots routes. A user sees every pilot (they are no
user's objects, as in GET /pilots) but, among a pilot's jobs, only the ones GET /jobs/{id} shows
them: their own, or every one for admins."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cairn.portal.access import caller, page_size
from cairn.portal.render import page
from kernel.errors import InvalidInput
from kernel.principal import Principal
from wms import job_reads, jobs, pilot_records
from wms import pilot_routes as api
from wms import routes as job_api

routes = web.RouteTableDef()


def _state(request: web.Request) -> str | None:
    state = request.query.get("state") or None
    if state is not None and state not in pilot_records.STATES:
        raise InvalidInput(f"unknown pilot state {state!r}; states: {', '.join(pilot_records.STATES)}")
    return state


@routes.get("/pilots")
async def pilot_list(request: web.Request) -> web.Response:
    """One page of pilots, newest first; `after` is the last pilot of the previous page."""
    db, _ = caller(request, api.routes, "GET", "/pilots")
    limit = page_size(request)
    found = await pilot_records.page_pilots(db, site=request.query.get("site") or None,
                                            queue=request.query.get("queue") or None, state=_state(request),
                                            after=request.query.get("after") or None, limit=limit + 1)
    shown = [pilot_records.public_view(d) for d in found[:limit]]
    return page(request, "pilots.html", {"pilots": shown, "states": pilot_records.STATES,
                                         "next_after": shown[-1]["name"] if len(found) > limit else None})


def _readable(user: Principal, job: dict[str, Any]) -> bool:
    return user.is_admin or job["owner"] == user.sub


@routes.get("/pilots/{name}")
async def pilot_page(request: web.Request) -> web.Response:
    """A pilot and one page of the jobs it ran that the user may see (`after`: a job id)."""
    db, user = caller(request, api.routes, "GET", "/pilots/{name}")
    caller(request, job_api.routes, "GET", "/jobs/{id}")
    pilot = await api.pilot_view(db, user, request.match_info["name"])
    ran: list[str] = pilot.pop("jobs", [])
    after = request.query.get("after")
    start = ran.index(after) + 1 if after in ran else 0
    limit = page_size(request)
    visible: list[dict[str, Any]] = []
    while start < len(ran) and len(visible) <= limit:  # bounded slices, so a busy pilot is never read whole
        chunk = ran[start:start + limit + 1]
        found = {d["_id"]: d for d in await job_reads.get_jobs(db, chunk)}
        visible += [jobs.public_view(found[i]) for i in chunk
                    if i in found and user.sees_vo(found[i].get("vo")) and _readable(user, found[i])]
        start += len(chunk)
    return page(request, "pilot.html", {"pilot": pilot, "jobs": visible[:limit], "ran": len(ran),
                                        "next_after": visible[limit - 1]["id"] if len(visible) > limit else None})
