"""HTTP routes of transformations: create, list, show (with files per status and tasks per
state), files, tasks, and the actions flush, stop, start, extend, clean and delete. Only the
owner (or an admin) sees or changes a transformation; scopes jobs.read / jobs.write (its tasks
are jobs, as for jobs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from kernel.db import Document
from kernel.errors import Conflict, InvalidInput
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, json_response, query_int, read_model, scopes
from productions import cleaning, stopping, tasks, transformation_files, transformations
from productions.owned_routes import add_action, add_creation, add_listing, mine
from productions.spec import TransformationSpec

routes = ApiRoutes("transformations")

READ = scopes("jobs.read")
WRITE = scopes("jobs.write")
NOUN = "transformation"


class ExtendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(..., ge=1, le=10_000_000, description="how many more tasks to allow")


async def _mine(request: web.Request) -> Document:
    return await mine(request, transformations.get, NOUN)


def _one_of(request: web.Request, name: str, allowed: Sequence[str]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise InvalidInput(f"unknown {name} {value!r}; {name}s: {', '.join(allowed)}")
    return value


add_creation(routes, "/transformations", TransformationSpec, transformations.create, transformations.public_view,
             name="add_transformation", policy=WRITE, summary="Create a transformation",
             responses={400: "invalid spec or query", 403: "a scope you may not read"})
add_listing(routes, "/transformations", "transformations", transformations.list_transformations,
            transformations.public_view, name="list_transformations", policy=READ)


@routes.get("/transformations/{id}", policy=READ, summary="A transformation, its files per status, its tasks per state",
            responses={404: "no such transformation (or not yours)"})
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
    status = _one_of(request, "status", transformation_files.STATUSES)
    found = await transformation_files.files_of(request.app[DATABASE], str(doc["_id"]), status,
                                                request.query.get("after"),
                                                query_int(request, "limit", 1000, minimum=1, maximum=10_000))
    return json_response([transformation_files.public_view(f) for f in found])


@routes.get("/transformations/{id}/tasks", policy=READ, summary="A transformation's tasks, by number",
            query={"state": "only this state", "after": "page after this number", "limit": "default 1000"},
            response=JsonList)
async def transformation_tasks(request: web.Request) -> web.Response:
    doc = await _mine(request)
    state = _one_of(request, "state", tasks.STATES)
    found = await tasks.tasks_in(request.app[DATABASE], str(doc["_id"]), [state] if state else list(tasks.STATES),
                                 query_int(request, "limit", 1000, minimum=1, maximum=10_000),
                                 query_int(request, "after", -1, minimum=-1))
    return json_response([tasks.public_view(t) for t in found])


@routes.post("/transformations/{id}/extend", policy=WRITE, summary="Allow more tasks (max_tasks += tasks)",
             body=ExtendRequest, responses={409: "cleaned"})
async def extend_transformation(request: web.Request) -> web.Response:
    doc = await _mine(request)
    body = await read_model(request, ExtendRequest)
    changed = await transformations.extend(request.app[DATABASE], doc, body.tasks)
    return json_response(transformations.public_view(changed))


def _viewed(change: Any) -> Any:
    async def act(db: Any, doc: Document) -> dict[str, Any]:
        return transformations.public_view(await change(db, doc))
    return act


async def _delete(db: Any, doc: Document) -> dict[str, Any]:
    if doc.get("production"):
        raise Conflict(f"transformation {doc['_id']} is a step of production {doc['production']}: delete that")
    return await cleaning.delete(db, doc)


for _name, _action, _summary, _refusal in (
    ("flush", _viewed(stopping.flush), "Make tasks of incomplete groups too (once)", "not active"),
    ("stop", stopping.stop, "Stop: no new tasks; tasks and jobs not started are cancelled (no data deleted)",
     "not running"),
    ("start", _viewed(stopping.start), "Resume a stopped transformation", "not stopped"),
    ("clean", cleaning.clean, "Clean a stopped or completed transformation: end its jobs and requests, delete "
     "its tasks and file statuses (no data deleted)", "not stopped or completed"),
):
    add_action(routes, "POST", f"/transformations/{{id}}/{_name}", transformations.get, NOUN, _action,
               name=f"{_name}_transformation", policy=WRITE, summary=_summary, responses={409: _refusal})
add_action(routes, "DELETE", "/transformations/{id}", transformations.get, NOUN, _delete,
           name="delete_transformation", policy=WRITE,
           summary="Delete a transformation: stop, clean, forget it (no data deleted)",
           responses={409: "a step of a production"})
