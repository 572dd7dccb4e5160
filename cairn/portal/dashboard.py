"""The personal dashboard: my quota per SE, my stuck and replicating rules, my failed jobs.

Each panel is gated by its REST route's policy; a panel the token may not read is left out.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cairn.portal.access import caller
from cairn.portal.render import page
from catalogue.authorization import visible_rules
from kernel.errors import Forbidden
from rules import quotas, store
from rules import routes as rule_api
from rules.rule_models import rule_view
from wms import job_reads, jobs
from wms import routes as job_api

routes = web.RouteTableDef()


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    context: dict[str, Any] = {"quotas": None, "rules": None, "failed_jobs": None}
    try:
        db, user = caller(request, rule_api.routes, "GET", "/quotas")
        context["quotas"] = await quotas.quotas_and_usage(db, user.sub)
        mine = [*await store.list_rules(db, account=user.sub, state="stuck", limit=50),
                *await store.list_rules(db, account=user.sub, state="replicating", limit=50)]
        context["rules"] = [rule_view(d, user) for d in await visible_rules(db, user, mine)]
    except Forbidden:
        pass
    try:
        db, user = caller(request, job_api.routes, "GET", "/jobs")
        context["failed_jobs"] = [jobs.public_view(d) async for d in
                                  job_reads.list_jobs(db, owner=user.sub, state="failed", limit=50)]
    except Forbidden:
        pass
    return page(request, "dashboard.html", context)
