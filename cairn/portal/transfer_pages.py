"""Transfer monitoring: a source-by-destination matrix, queue depths and failures by category.

The numbers are the ones GET /api/v1/transfers/stats reports (aggregated in MongoDB), refused
as that route refuses them (they count every VO's transfers); the browser gets the per-link
series for the throughput plot as JSON, never the requests.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cairn.portal.access import caller
from cairn.portal.render import page
from catalogue.authorization import require_installation_view
from kernel.web import json_response, query_int
from transfers import stats_routes as api
from transfers.link_series import MAX_HOURS, hourly_series
from transfers.link_stats import failures_by_reason, link_statistics, queue_depths

routes = web.RouteTableDef()


def matrix(links: list[dict[str, Any]]) -> dict[str, Any]:
    """Links arranged as rows (sources) by columns (destinations)."""
    sources = sorted({link["source"] for link in links})
    dests = sorted({link["dest"] for link in links})
    cells = {(link["source"], link["dest"]): link for link in links}
    return {"sources": sources, "dests": dests, "cells": {f"{s}>{d}": c for (s, d), c in cells.items()}}


@routes.get("/transfers")
async def transfers(request: web.Request) -> web.Response:
    db, user = caller(request, api.routes, "GET", "/transfers/stats")
    require_installation_view(user, "transfer statistics")
    links = await link_statistics(db)
    return page(request, "transfers.html", {"matrix": matrix(links), "queues": await queue_depths(db),
                                            "failures": await failures_by_reason(db)})


@routes.get("/transfers/series")
async def series(request: web.Request) -> web.Response:
    """Files done and failed and MB moved per hour (all links, or the one chosen), for the plot."""
    db, user = caller(request, api.routes, "GET", "/transfers/series")
    require_installation_view(user, "transfer statistics")
    return json_response(await hourly_series(db, hours=query_int(request, "hours", 48, minimum=1, maximum=MAX_HOURS),
                                             source=request.query.get("source") or None,
                                             dest=request.query.get("dest") or None))
