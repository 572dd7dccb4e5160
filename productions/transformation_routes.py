"""HTTP routes of transformations: create, list, show, their files and tasks, and flush, stop,
start, extend. Policies are the job layer's scopes (a transformation makes jobs as its owner);
only its owner or an admin sees or changes one (403 otherwise, as for jobs)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue.authorization import vo_query
from kernel.errors import Forbidden, InvalidInput
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes
from productions import stopping, tasks, transformation_files, transformations
from productions.spec import TransformationSpec

routes = ApiRoutes("transformations")

READ = scopes("jobs.read")
WRITE = scopes("jobs.write")


class ExtendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(..., ge=1, le=10_000_000, description="how many more tasks to allow")


async def _mine(request: web.Request) -> dict[str, object]:
    doc = await transformations.get(request.app[DATABASE], request.match_info["id"])
    transformations.check_owner(principal_of(request), doc)
    return doc


@routes.post("/transformations", status=201, policy=WRITE, summary="Create a transformation",
             body=TransformationSpec, responses={400: "invalid spec or query", 403: "a scope you may not read"})
async def add_transformation(request: web.Request) -> web.Response:
    spec = await read_model(request, TransformationSpec)
    doc = await transformations.create(request.app[DATABASE], principal_of(request), spec)
    return json_response(transformations.public_view(doc), status=201)


@routes.get("/transformations", policy=READ, summary="Transformations, newest first (yours; admins: anyone's)",
            query={"owner": "whose (admins)", "limit": "at most this many (default 100)"}, response=JsonList)
async def list_transformations(request: web.Request) -> web.Response:
    principal = principal_of(request)
    owner = request.query.get("owner")
    if not principal.is_admin:
        if owner not in (None, principal.sub):
            raise Forbidden("only admins may list other users' transformations")
        owner = principal.sub
    found = await transformations.list_transformations(request.app[DATABASE], owner,
                                                       query_int(request, "limit", 100, minimum=1, maximum=10_000),
                                                       vo_query(principal))
    return json_response([transformations.public_view(d) for d in found])


@routes.get("/transformations/{id}", policy=READ, summary="A transformation, its files per status, its tasks per state",
            responses={404: "no such transformation", 403: "not yours"})
async def show_transformation(request: web.Request) -> web.Response:
    doc = await _mine(request)
    db = request.app[DATABASE]
    return json_response({**transformations.public_view(doc),
                          "files": await transformation_files.count_by_status(db, str(doc["_id"])),
                          "tasks": await tasks.count_by_state(db, str(doc["_id"]))})


@routes.get("/transformations/{id}/files", policy=READ, summary="A transformation's input files and their status",
            query={"status": "only this status", "after": "page after this LFN", "limit": "default 1000"},
            response=JsonList)
async def transformation_files_route(request: web.Request) -> web.Response:
    doc = await _mine(request)
    status = request.query.get("status")
    if status is not None and status not in transformation_files.STATUSES:
        raise InvalidInput(f"unknown status {status!r}; statuses: {', '.join(transformation_files.STATUSES)}")
    found = await transformation_files.files_of(request.app[DATABASE], str(doc["_id"]), status,
                                                request.query.get("after"),
                                                query_int(request, "limit", 1000, minimum=1, maximum=10_000))
    return json_response([transformation_files.public_view(f) for f in found])


@routes.get("/transformations/{id}/tasks", policy=READ, summary="A transformation's tasks, by number",
            query={"state": "only this state", "after": "page after this number", "limit": "default 1000"},
            response=JsonList)
async def transformation_tasks(request: web.Request) -> web.Response:
    doc = await _mine(request)
    state = request.query.get("state")
    if state is not None and state not in tasks.STATES:
        raise InvalidInput(f"unknown state {state!r}; states: {', '.join(tasks.STATES)}")
    found = await tasks.tasks_in(request.app[DATABASE], str(doc["_id"]), [state] if state else list(tasks.STATES),
                                 query_int(request, "limit", 1000, minimum=1, maximum=10_000),
                                 query_int(request, "after", -1, minimum=-1))
    return json_response([tasks.public_view(t) for t in found])


@routes.post("/transformations/{id}/flush", policy=WRITE, summary="Make tasks of incomplete groups too (once)",
             responses={409: "not active"})
async def flush_transformation(request: web.Request) -> web.Response:
    doc = await stopping.flush(request.app[DATABASE], await _mine(request))
    return json_response(transformations.public_view(doc))


@routes.post("/transformations/{id}/stop", policy=WRITE,
             summary="Stop: no new tasks; tasks and jobs not started are cancelled (no data deleted)",
             responses={409: "not running"})
async def stop_transformation(request: web.Request) -> web.Response:
    outcome = await stopping.stop(request.app[DATABASE], await _mine(request))
    return json_response(outcome)


@routes.post("/transformations/{id}/start", policy=WRITE, summary="Resume a stopped transformation",
             responses={409: "not stopped"})
async def start_transformation(request: web.Request) -> web.Response:
    doc = await stopping.start(request.app[DATABASE], await _mine(request))
    return json_response(transformations.public_view(doc))


@routes.post("/transformations/{id}/extend", policy=WRITE, summary="Allow more tasks (max_tasks += tasks)",
             body=ExtendRequest, responses={409: "cleaned"})
async def extend_transformation(request: web.Request) -> web.Response:
    doc = await _mine(request)
    body = await read_model(request, ExtendRequest)
    changed = await transformations.extend(request.app[DATABASE], doc, body.tasks)
    return json_response(transformations.public_view(changed))
