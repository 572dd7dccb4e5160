"""Job monitor: jobs filtered by state (and owner, for admins), multi-select kill and
reschedule, and a job's logs — through the checks of the /jobs routes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from cairn.portal.access import caller, page_size
from cairn.portal.render import page
from catalogue.authorization import vo_query
from kernel.errors import CairnError, Forbidden, InvalidInput, NotFound
from wms import control, job_reads, jobs, pilot_records, states
from wms import pilot_routes as pilot_api
from wms import routes as api
from wms.routes import _own as require_own_job

routes = web.RouteTableDef()
ACTIONS = {"kill": control.kill, "reschedule": control.reschedule}


@routes.get("/jobs")
async def job_list(request: web.Request) -> web.Response:
    """One page of jobs, newest first; `after` is the last job of the previous page."""
    db, user = caller(request, api.routes, "GET", "/jobs")
    owner = request.query.get("owner") or None
    if not user.is_admin:
        if owner not in (None, user.sub):
            raise Forbidden("only admins may list other users' jobs")
        owner = user.sub
    state = request.query.get("state") or None
    if state is not None and state not in states.ALL:
        raise InvalidInput(f"unknown state {state!r}; states: {', '.join(states.ALL)}")
    limit = page_size(request)
    found = await job_reads.page_jobs(db, owner=owner, state=state, after=request.query.get("after") or None,
                                      limit=limit + 1, where=vo_query(user))
    counts = await job_reads.count_by_state(db, None if user.is_admin else user.sub, where=vo_query(user))
    return page(request, "jobs.html", {"jobs": [jobs.public_view(d) for d in found[:limit]], "states": states.ALL,
                                       "counts": counts, "outcomes": request.query.getall("outcome", []),
                                       "next_after": found[limit - 1]["_id"] if len(found) > limit else None})


@routes.post("/jobs/control")
async def control_jobs(request: web.Request) -> web.Response:
    """Kill or reschedule every selected job; each one is checked as POST /jobs/{id}/ACTION."""
    form = await request.post()
    action = str(form.get("action", ""))
    if action not in ACTIONS:
        raise InvalidInput("action must be kill or reschedule")
    db, user = caller(request, api.routes, "POST", f"/jobs/{{id}}/{action}")
    outcomes: list[str] = []
    for job_id in (str(v) for v in form.getall("job", [])):
        try:
            job = await jobs.get_job(db, job_id)
            require_own_job(user, job)
            await ACTIONS[action](db, job, f"{action} by {user.sub} from the portal")
            outcomes.append(f"{job_id}: {action} done")
        except CairnError as exc:
            outcomes.append(f"{job_id}: {exc.message}")
    back = str(form.get("back", "/ui/jobs"))
    back = back if back.startswith("/ui/jobs") else "/ui/jobs"
    separator = "&" if "?" in back else "?"
    raise web.HTTPSeeOther(back + separator + urlencode([("outcome", o) for o in outcomes]))


@routes.get("/jobs/{id}")
async def job_page(request: web.Request) -> web.Response:
    """A job's state, history and the tails of its output."""
    db, user = caller(request, api.routes, "GET", "/jobs/{id}/logs")
    job: dict[str, Any] = await jobs.get_job(db, request.match_info["id"])
    require_own_job(user, job)
    return page(request, "job.html", {"job": jobs.public_view(job), "pilot": await _pilot_of(request, job)})


async def _pilot_of(request: web.Request, job: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the pilot that ran the job, if the factory submitted it (a pilot started by
    hand has none) and the token may read pilots (GET /pilots/{name})."""
    if not job.get("pilot"):
        return None
    try:
        db, _ = caller(request, pilot_api.routes, "GET", "/pilots/{name}")
        return pilot_records.public_view(await pilot_records.get_pilot(db, job["pilot"]))
    except (Forbidden, NotFound):
        return None
