"""Accounting: bytes and replicas per SE and per account, and transfers per activity over time,
as tables, plots (PNG from the browser's canvas) and CSV downloads.

The figures are the catalogue's usage counters, the rules' account usage and the transfers'
hourly counters added up per activity in MongoDB (the same functions as GET /usage/ses,
GET /quotas and GET /transfers/activity); an account sees its own rows, admins every account's.
Usage per SE and transfers per activity count every VO's data: a caller GET /usage/ses and
GET /transfers/activity refuse (a VO among several) is refused their CSV and series (403), and
the page leaves those tables out.
The browser gets the activity series as JSON, never the requests.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
from typing import Any

from aiohttp import web

from cairn.portal.access import caller, sees_installation
from cairn.portal.render import page
from catalogue import usage
from catalogue import usage_routes as usage_api
from catalogue.authorization import name_in_vo, require_installation_view
from kernel.errors import Forbidden, InvalidInput
from kernel.web import json_response, query_int
from rules import quotas
from rules import routes as rule_api
from transfers import stats_routes as transfer_api
from transfers.activity_series import MAX_HOURS, activity_series

routes = web.RouteTableDef()
COLUMNS = {"ses": ("se", "replicas", "bytes"),
           "accounts": ("account", "se", "used_bytes", "used_files", "quota_bytes"),
           "activity": ("time", "activity", "done", "failed", "mb")}


async def _series(request: web.Request) -> dict[str, Any]:
    """The activity series of the query string (`hours`, `step_hours`), as GET /transfers/activity."""
    db, user = caller(request, transfer_api.routes, "GET", "/transfers/activity")
    require_installation_view(user, "transfer activity")
    return await activity_series(db, hours=query_int(request, "hours", 48, minimum=1, maximum=MAX_HOURS),
                                 step_hours=query_int(request, "step_hours", 1, minimum=1, maximum=MAX_HOURS))


def _activity_rows(series: dict[str, Any]) -> list[dict[str, Any]]:
    """The series in long form: one row per bucket and activity."""
    times = [dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%MZ") for t in series["buckets"]]
    return [{"time": at, "activity": name, "done": s["done"][i], "failed": s["failed"][i], "mb": s["mb"][i]}
            for name, s in series["activities"].items() for i, at in enumerate(times)]


async def _table(request: web.Request, name: str) -> list[dict[str, Any]]:
    if name == "ses":
        db, user = caller(request, usage_api.routes, "GET", "/usage/ses")
        require_installation_view(user, "usage per SE")
        return await usage.se_usage(db)
    if name == "activity":
        return _activity_rows(await _series(request))
    db, user = caller(request, rule_api.routes, "GET", "/quotas")
    rows = await quotas.quotas_and_usage(db, None if user.is_admin else user.sub)
    return [r for r in rows if name_in_vo(user, str(r["account"]))]


@routes.get("/accounting")
async def accounting(request: web.Request) -> web.Response:
    _, user = caller(request, usage_api.routes, "GET", "/usage/ses")
    context: dict[str, Any] = {  # a VO among several sees its accounts, not every VO's usage per SE
        "ses": await _table(request, "ses") if sees_installation(user) else None,
        "accounts": await _table(request, "accounts"), "activity": None}
    with contextlib.suppress(Forbidden):  # a token without transfers.read sees storage accounting only
        context["activity"] = (await _series(request))["totals"]
    return page(request, "accounting.html", context)


@routes.get("/accounting/activity")
async def activity(request: web.Request) -> web.Response:
    """The activity series for the plot (JSON, the same document as GET /transfers/activity)."""
    return json_response(await _series(request))


@routes.get("/accounting.csv")
async def accounting_csv(request: web.Request) -> web.Response:
    """One table as CSV (`table=ses`, `accounts` or `activity`), for spreadsheets and plots elsewhere."""
    name = request.query.get("table", "ses")
    if name not in COLUMNS:
        raise InvalidInput("table must be ses, accounts or activity")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS[name], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(await _table(request, name))
    return web.Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="cairn-{name}.csv"'})
