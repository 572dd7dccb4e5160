"""HTTP routes for the batch queues of sites (reading: catalogue.read; changing: admins)."""

from __future__ import annotations

import re

from aiohttp import web

from catalogue import site_queues
from catalogue.site_queues import QUEUE_NAME_PATTERN, QueueSettings, SiteQueue
from catalogue.storage_elements import NAME_PATTERN
from kernel.errors import InvalidInput, NotFound
from kernel.responses import JsonList
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, read_model, scopes

routes = ApiRoutes("sites")
READ = scopes("catalogue.read")


@routes.get("/site-queues", policy=READ, summary="Batch queues of every site (or of one: ?site=)",
            query={"site": "only this site's queues"}, response=JsonList)
async def list_site_queues(request: web.Request) -> web.Response:
    found = await site_queues.list_queues(request.app[DATABASE], request.query.get("site") or None)
    return json_response([q.model_dump() for q in found])


@routes.put("/sites/{name}/queues/{queue}", policy=ADMIN, summary="Create or replace a batch queue of a site",
            body=QueueSettings, responses={404: "no such site"})
async def put_site_queue(request: web.Request) -> web.Response:
    body = await read_model(request, QueueSettings)
    site, name = request.match_info["name"], request.match_info["queue"]
    if not re.fullmatch(QUEUE_NAME_PATTERN, name):
        raise InvalidInput(f"invalid queue name {name!r}: letters, digits, '_' and '-' (no '.'), at most 64")
    if not re.fullmatch(NAME_PATTERN, site):
        raise NotFound(f"site {site!r} does not exist")
    queue = SiteQueue(**body.model_dump(), site=site, name=name)
    return json_response((await site_queues.put_queue(request.app[DATABASE], queue)).model_dump())


@routes.delete("/sites/{name}/queues/{queue}", policy=ADMIN, summary="Remove a batch queue of a site",
               responses={404: "no such site or queue"})
async def delete_site_queue(request: web.Request) -> web.Response:
    if not re.fullmatch(QUEUE_NAME_PATTERN, request.match_info["queue"]):
        raise NotFound(f"site {request.match_info['name']!r} has no queue {request.match_info['queue']!r}")
    await site_queues.delete_queue(request.app[DATABASE], request.match_info["name"], request.match_info["queue"])
    return json_response({"deleted": request.match_info["queue"]})
