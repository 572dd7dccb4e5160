"""Productions and transformations: lists (yours; admins: anyone's), a production's progress per
step, and a transformation's files by status and tasks by state with a progress plot and keyset
pages of its files and tasks — through the checks of the /productions and /transformations routes
(only the owner or an admin sees one; another's answers 403, as in the API)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cairn.portal.access import caller, page_size
from cairn.portal.render import page
from catalogue.authorization import vo_query
from kernel.errors import Forbidden, InvalidInput
from kernel.principal import Principal
from kernel.web import query_int
from productions import production, tasks, transformation_files, transformations
from productions import production_routes as production_api
from productions import transformation_routes as api
from productions.owned_routes import check_owner

routes = web.RouteTableDef()


def _owner(request: web.Request, user: Principal) -> str | None:
    """Whose to list: yours, or (admins) anyone's or everyone's, as GET /transformations decides."""
    owner = request.query.get("owner") or None
    if not user.is_admin:
        if owner not in (None, user.sub):
            raise Forbidden("only admins may list other users' transformations")
        owner = user.sub
    return owner


@routes.get("/productions")
async def production_list(request: web.Request) -> web.Response:
    """Productions and transformations of the user's VO, newest first (`limit` of each, at most
    1000), kept to the VO as GET /transformations keeps them: a VO's admin is admin of its VO only."""
    db, user = caller(request, api.routes, "GET", "/transformations")
    caller(request, production_api.routes, "GET", "/productions")
    owner, limit = _owner(request, user), page_size(request)
    found = await transformations.list_transformations(db, owner, limit + 1, vo_query(user))
    made = await production.list_productions(db, owner, limit, vo_query(user))
    return page(request, "productions.html", {
        "productions": [production.public_view(d) for d in made],
        "transformations": [transformations.public_view(d) for d in found[:limit]],
        "more": len(found) > limit, "limit": limit})


@routes.get("/productions/{id}")
async def production_page(request: web.Request) -> web.Response:
    """A production's status and its steps' files by status and tasks by state."""
    db, user = caller(request, production_api.routes, "GET", "/productions/{id}/status")
    doc = await production.get(db, request.match_info["id"])
    check_owner(user, doc, "production")
    return page(request, "production.html", {"status": await production.status(db, doc),
                                             "statuses": transformation_files.STATUSES})


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name) or None
    if value is not None and value not in allowed:
        raise InvalidInput(f"unknown {name} {value!r}; one of {', '.join(allowed)}")
    return value


@routes.get("/transformations/{id}")
async def transformation_page(request: web.Request) -> web.Response:
    """A transformation's progress, one page of its files (`file_status`, `after` an LFN) and one
    page of its tasks (`task_state`, `after_task` a number)."""
    db, user = caller(request, api.routes, "GET", "/transformations/{id}")
    caller(request, api.routes, "GET", "/transformations/{id}/files")
    caller(request, api.routes, "GET", "/transformations/{id}/tasks")
    doc = await transformations.get(db, request.match_info["id"])
    check_owner(user, doc, "transformation")
    limit = page_size(request)
    status = _choice(request, "file_status", transformation_files.STATUSES)
    state = _choice(request, "task_state", tasks.STATES)
    files = await transformation_files.files_of(db, doc["_id"], status, request.query.get("after") or None, limit + 1)
    made = await tasks.tasks_in(db, doc["_id"], [state] if state else list(tasks.STATES), limit + 1,
                                query_int(request, "after_task", -1, minimum=-1))
    context: dict[str, Any] = {
        "t": transformations.public_view(doc), "limit": limit,
        "files_by_status": await transformation_files.count_by_status(db, doc["_id"]),
        "tasks_by_state": await tasks.count_by_state(db, doc["_id"]),
        "files": [transformation_files.public_view(f) for f in files[:limit]],
        "next_file": files[limit - 1]["lfn"] if len(files) > limit else None,
        "tasks": [tasks.public_view(t) for t in made[:limit]],
        "next_task": made[limit - 1]["number"] if len(made) > limit else None}
    return page(request, "transformation.html", context)
