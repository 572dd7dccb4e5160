"""HTTP routes of the job layer: submission and watching for users, matching and reports for pilots.

Users (scopes jobs.read / jobs.write) see and control their own jobs; admins see all.
Pilots need scope jobs.pilot. A pilot token from the factory also names its site and its pilot
(claims cairn_site, cairn_pilot): it may match only at that site and speak only as that pilot,
so with the attempt guard of `execution` it reports only for jobs it holds.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from catalogue.authorization import name_in_vo, require_vo, vo_query
from catalogue.vos import fair_shares, set_fair_share
from kernel.errors import Forbidden, InvalidInput, NotFound
from kernel.principal import Principal
from kernel.responses import JsonList, RebuildBody
from kernel.web import (
    ADMIN,
    DATABASE,
    ApiRoutes,
    json_response,
    principal_of,
    query_int,
    read_json,
    read_model,
    scopes,
    validation_message,
)
from wms import control, counter_recount, execution, job_reads, jobs, matching, states, submission, task_queues
from wms.api_models import ControlRequest, FinalReport, MatchRequest, OutputsReport, PilotReport, ShareRequest
from wms.description import JobDescription, Submission
from wms.pilot_factory import PILOT_NAME_CLAIM, PILOT_SITE_CLAIM

routes = ApiRoutes("jobs")

READ = scopes("jobs.read")
WRITE = scopes("jobs.write")
PILOT = scopes("jobs.pilot")


def _own(principal: Principal, job: dict[str, Any]) -> None:
    """Another user's job answers as a missing one: ids are sequential, so a refusal naming its
    owner would tell anyone who runs jobs, and how many."""
    require_vo(principal, job, f"job {job['_id']} does not exist")
    if not principal.is_admin and job["owner"] != principal.sub:
        raise NotFound(f"job {job['_id']} does not exist")


async def _job_for(request: web.Request) -> dict[str, Any]:
    job = await jobs.get_job(request.app[DATABASE], request.match_info["id"])
    _own(principal_of(request), job)
    return job


@routes.post("/jobs", status=201,
             policy=WRITE, summary="Submit jobs (one description, or {jobs: [...]}; parametric ones expand)",
             body=Submission, responses={400: "malformed description, unknown SE or site, dataset/query input",
                                         403: "an input file you may not read"})
async def submit_jobs(request: web.Request) -> web.Response:
    data = await read_json(request)
    try:
        bulk = Submission.model_validate(data) if isinstance(data, dict) and "jobs" in data else None
        descriptions = bulk.jobs if bulk is not None else [JobDescription.model_validate(data)]
    except ValidationError as exc:
        text, problems = validation_message(exc)
        raise InvalidInput(f"invalid job description: {text}", details={"errors": problems}) from exc
    ids = await submission.submit(request.app[DATABASE], principal_of(request), descriptions,
                                  request_id=bulk.request_id if bulk is not None else None)
    return json_response({"ids": ids}, status=201)


@routes.get("/jobs", policy=READ, summary="List jobs, newest first (yours; admins may ask for anyone's)",
            query={"owner": "whose jobs (admins: any; default: yours, or everyone's for admins)",
                   "state": "only this state", "limit": "at most this many (default 100)"}, response=JsonList)
async def list_jobs(request: web.Request) -> web.Response:
    principal = principal_of(request)
    owner = request.query.get("owner")
    if not principal.is_admin:
        if owner not in (None, principal.sub):
            raise Forbidden("only admins may list other users' jobs")
        owner = principal.sub
    state = request.query.get("state")
    if state is not None and state not in states.ALL:
        raise InvalidInput(f"unknown state {state!r}; states: {', '.join(states.ALL)}")
    limit = query_int(request, "limit", 100, minimum=1, maximum=10_000)
    found = [jobs.public_view(d) async for d in job_reads.list_jobs(request.app[DATABASE], owner=owner, state=state,
                                                                 limit=limit, where=vo_query(principal))]
    return json_response(found)


@routes.get("/job-summary", policy=READ, summary="Jobs per state (yours; everyone's for admins)")
async def job_summary(request: web.Request) -> web.Response:
    principal = principal_of(request)
    counts = await job_reads.count_by_state(request.app[DATABASE], None if principal.is_admin else principal.sub,
                                            where=vo_query(principal))
    return json_response({state: counts.get(state, 0) for state in states.ALL})


@routes.get("/jobs/{id}", policy=READ, summary="A job: state, history, placement, outcome",
            responses={404: "no such job (or not yours)"})
async def get_job(request: web.Request) -> web.Response:
    job = await _job_for(request)
    view = jobs.public_view(job)
    view.pop("stdout", None)
    view.pop("stderr", None)
    return json_response(view)


@routes.get("/jobs/{id}/logs", policy=READ, summary="A job's exit code and the tails of its stdout and stderr")
async def job_logs(request: web.Request) -> web.Response:
    job = await _job_for(request)
    return json_response({"id": job["_id"], "state": job["state"], "exit_code": job.get("exit_code"),
                          "stdout": job.get("stdout", ""), "stderr": job.get("stderr", "")})


@routes.post("/jobs/{id}/kill", policy=WRITE, summary="Kill a job (its owner or an admin)", body=ControlRequest,
             responses={409: "the job has finished"})
async def kill_job(request: web.Request) -> web.Response:
    job = await _job_for(request)
    body = await _optional_control(request)
    reason = body.reason or f"killed by {principal_of(request).sub}"
    return json_response(await control.kill(request.app[DATABASE], job, reason))


@routes.post("/jobs/{id}/reschedule", policy=WRITE, summary="Run a stalled, failed or killed job again",
             body=ControlRequest, responses={409: "the job is not in a reschedulable state"})
async def reschedule_job(request: web.Request) -> web.Response:
    job = await _job_for(request)
    body = await _optional_control(request)
    reason = body.reason or f"rescheduled by {principal_of(request).sub}"
    return json_response(await control.reschedule(request.app[DATABASE], job, reason))


async def _optional_control(request: web.Request) -> ControlRequest:
    if not request.can_read_body:
        return ControlRequest()
    return await read_model(request, ControlRequest)


@routes.get("/task-queues", policy=READ, summary="Task queues: requirements, group, priority and waiting jobs",
            response=JsonList)
async def list_task_queues(request: web.Request) -> web.Response:
    principal = principal_of(request)
    queues = await task_queues.all_queues(request.app[DATABASE])
    return json_response([{"id": q.pop("_id"), **q} for q in queues if name_in_vo(principal, str(q.get("group")))])


@routes.get("/job-shares", policy=READ, summary="Fair share: each group's VO, share and jobs at pilots",
            response=JsonList)
async def list_shares(request: web.Request) -> web.Response:
    principal = principal_of(request)
    usage = await task_queues.all_group_usage(request.app[DATABASE])
    return json_response([{"group": u["_id"], "vo": task_queues.group_vo(u["_id"]), "share": u.get("share", 1.0),
                           "running": u.get("running", 0)} for u in usage if name_in_vo(principal, u["_id"])])


@routes.put("/job-shares/{group}", policy=WRITE, body=ShareRequest,
            summary="Set a group's fair share within its VO (default 1): the VO's admins or a global admin",
            responses={403: "not an admin", 404: "a group of another VO"})
async def set_share(request: web.Request) -> web.Response:
    principal = principal_of(request)
    group = request.match_info["group"]
    if not principal.is_admin:
        raise Forbidden("group shares are set by the VO's admins or the installation's (scope 'admin')")
    if not name_in_vo(principal, group):
        raise NotFound(f"group {group} does not exist")  # another VO's group: as a missing one
    body = await read_model(request, ShareRequest)
    await task_queues.set_share(request.app[DATABASE], group, body.share)
    return json_response({"group": group, "vo": task_queues.group_vo(group), "share": body.share})


@routes.post("/job-counters/rebuild", policy=ADMIN, body=RebuildBody,
             summary="Recount the task queues' waiting jobs and the groups' jobs at pilots; report (and fix) drift")
async def rebuild_counters(request: web.Request) -> web.Response:
    body = await read_model(request, RebuildBody)
    return json_response(await counter_recount.rebuild(request.app[DATABASE], fix=body.fix))


@routes.get("/vo-shares", policy=READ, summary="Fair share between VOs: each VO's share and jobs at pilots "
            "(yours only, unless global admin)", response=JsonList)
async def list_vo_shares(request: web.Request) -> web.Response:
    principal = principal_of(request)
    db = request.app[DATABASE]
    running: dict[str, int] = {}
    for usage in await task_queues.all_group_usage(db):
        vo = task_queues.group_vo(usage["_id"])
        running[vo] = running.get(vo, 0) + max(0, int(usage.get("running", 0)))
    return json_response([{"vo": vo, "share": share, "running": running.get(vo, 0)}
                          for vo, share in (await fair_shares(db)).items() if principal.sees_vo(vo)])


@routes.put("/vo-shares/{vo}", policy=ADMIN, body=ShareRequest,
            summary="Set a VO's share of the pilots against other VOs (default 1)",
            responses={404: "no such VO"})
async def set_vo_share(request: web.Request) -> web.Response:
    body = await read_model(request, ShareRequest)
    vo = await set_fair_share(request.app[DATABASE], request.match_info["vo"], body.share)
    return json_response({"vo": vo.name, "share": vo.fair_share})


# ------------------------------------------------------------------------------------ pilots


PilotBody = TypeVar("PilotBody", MatchRequest, PilotReport, FinalReport, OutputsReport)
# What a factory's pilot token is bound to: the body field each claim must equal.
PILOT_BINDINGS = ((PILOT_NAME_CLAIM, "pilot"), (PILOT_SITE_CLAIM, "site"))


async def _pilot_body(request: web.Request, model: type[PilotBody]) -> PilotBody:
    """The body of a pilot call; 403 when a site-bound pilot token speaks for another pilot or
    asks for another site (a token without the claims, e.g. an admin's, may speak for any)."""
    body = await read_model(request, model)
    claims = principal_of(request).claims
    for claim, field in PILOT_BINDINGS:
        bound, given = claims.get(claim), getattr(body, field, None)
        if bound is not None and given is not None and given != bound:
            raise Forbidden(f"this pilot token is bound to {field} {bound}; it cannot act for {field} {given}")
    return body


@routes.post("/jobs/match", policy=PILOT, summary="A pilot asks for its next job (atomically its own)",
             body=MatchRequest, responses={200: "{job: work order} or {job: null} when nothing fits"})
async def match_job(request: web.Request) -> web.Response:
    body = await _pilot_body(request, MatchRequest)
    db = request.app[DATABASE]
    offer = matching.PilotOffer(pilot=body.pilot, site=body.site, cpu=body.cpu, memory_mb=body.memory_mb,
                                tags=tuple(body.tags))
    job = await matching.match(db, offer)
    return json_response({"job": await matching.work_order(db, job) if job is not None else None})


@routes.post("/jobs/{id}/start", policy=PILOT, summary="The pilot starts the payload (matched -> running)",
             body=PilotReport, responses={409: "the job is not matched to this pilot and attempt"})
async def start_job(request: web.Request) -> web.Response:
    body = await _pilot_body(request, PilotReport)
    return json_response(await execution.start(request.app[DATABASE], request.match_info["id"], body.attempt,
                                               body.pilot))


@routes.post("/jobs/{id}/heartbeat", policy=PILOT, summary="The job is alive; answers {kill: bool}",
             body=PilotReport, responses={409: "the pilot no longer holds this attempt: stop"})
async def heartbeat(request: web.Request) -> web.Response:
    body = await _pilot_body(request, PilotReport)
    return json_response(await execution.heartbeat(request.app[DATABASE], request.match_info["id"], body.attempt,
                                                   body.pilot))


@routes.post("/jobs/{id}/output-slots", policy=PILOT, summary="Where this attempt writes its outputs",
             body=PilotReport, responses={409: "the pilot no longer holds this attempt: write nothing"})
async def output_slots(request: web.Request) -> web.Response:
    body = await _pilot_body(request, PilotReport)
    return json_response(await execution.output_slots(request.app[DATABASE], request.match_info["id"], body.attempt,
                                                      body.pilot))


@routes.post("/jobs/{id}/outputs", policy=PILOT, summary="Register uploaded outputs with provenance",
             body=OutputsReport, responses={409: "the pilot no longer holds this attempt"})
async def register_outputs(request: web.Request) -> web.Response:
    body = await _pilot_body(request, OutputsReport)
    files = [f.model_dump() for f in body.files]
    return json_response(await execution.register_outputs(request.app[DATABASE], request.match_info["id"],
                                                           body.attempt, body.pilot, files))


@routes.post("/jobs/{id}/report", policy=PILOT, summary="The pilot reports the end of the job",
             body=FinalReport, responses={409: "the pilot no longer holds this attempt"})
async def report_job(request: web.Request) -> web.Response:
    body = await _pilot_body(request, FinalReport)
    return json_response(await execution.finish(
        request.app[DATABASE], request.match_info["id"], body.attempt, body.pilot, state=body.state,
        reason=body.reason, exit_code=body.exit_code, stdout=body.stdout, stderr=body.stderr,
    ))
