"""HTTP routes for watching transfers: per-link throughput, queue depths, failures by reason."""

from __future__ import annotations

from aiohttp import web

from kernel.web import DATABASE, ApiRoutes, json_response, scopes
from transfers.link_stats import failures_by_reason, link_statistics, queue_depths

routes = ApiRoutes("transfers")


@routes.get("/transfers/stats", policy=scopes("transfers.read"),
            summary="Per-link transfer counts and throughput, queue depths, failures by reason")
async def transfer_stats(request: web.Request) -> web.Response:
    db = request.app[DATABASE]
    return json_response({
        "links": await link_statistics(db),
        "queues": await queue_depths(db),
        "failures": await failures_by_reason(db),
    })
