"""HTTP routes for watching transfers: per-link throughput, queue depths, failures by reason."""

from __future__ import annotations

from aiohttp import web

from catalogue.authorization import require_installation_view
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, scopes
from transfers.activity_series import MAX_HOURS as ACTIVITY_MAX_HOURS
from transfers.activity_series import activity_series
from transfers.link_series import MAX_HOURS, hourly_series
from transfers.link_stats import db_commands_per_file, failures_by_reason, link_statistics, queue_depths

routes = ApiRoutes("transfers")


@routes.get("/transfers/stats", policy=scopes("transfers.read"),
            summary="Per-link transfer counts and throughput, queue depths, failures by reason, and the "
                    "database commands the workers sent per transferred file")
async def transfer_stats(request: web.Request) -> web.Response:
    require_installation_view(principal_of(request), "transfer statistics")
    db = request.app[DATABASE]
    links = await link_statistics(db)
    return json_response({
        "links": links,
        "db_commands_per_file": db_commands_per_file(links),
        "queues": await queue_depths(db),
        "failures": await failures_by_reason(db),
    })


@routes.get("/transfers/series", policy=scopes("transfers.read"),
            summary="Files done and failed and MB moved per hour, over the last hours (all links or one)",
            query={"hours": f"1..{MAX_HOURS} (48)", "source": "only from this SE", "dest": "only to this SE"},
            responses={400: "hours out of range"})
async def transfer_series(request: web.Request) -> web.Response:
    require_installation_view(principal_of(request), "transfer statistics")
    return json_response(await hourly_series(
        request.app[DATABASE], hours=query_int(request, "hours", 48, minimum=1, maximum=MAX_HOURS),
        source=request.query.get("source"), dest=request.query.get("dest")))


@routes.get("/transfers/activity", policy=scopes("transfers.read"),
            summary="Transfers per activity (files done, failed attempts, MB) over the last hours, in buckets",
            query={"hours": f"1..{ACTIVITY_MAX_HOURS} (48)", "step_hours": "bucket width in hours (1)"},
            responses={400: "hours or bucket count out of range"})
async def transfer_activity(request: web.Request) -> web.Response:
    require_installation_view(principal_of(request), "transfer activity")
    return json_response(await activity_series(
        request.app[DATABASE], hours=query_int(request, "hours", 48, minimum=1, maximum=ACTIVITY_MAX_HOURS),
        step_hours=query_int(request, "step_hours", 1, minimum=1, maximum=ACTIVITY_MAX_HOURS)))
