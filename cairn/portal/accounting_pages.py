"""Accounting: bytes and replicas per SE and per account, as tables, a plot and CSV downloads.

The figures are the catalogue's usage counters and the rules' account usage (the same functions
as GET /usage/ses and GET /quotas); an account sees its own rows, admins every account's.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from cairn.portal.access import caller
from cairn.portal.render import page
from catalogue import usage
from catalogue import usage_routes as usage_api
from catalogue.authorization import name_in_vo
from kernel.errors import InvalidInput
from rules import quotas
from rules import routes as rule_api

routes = web.RouteTableDef()
COLUMNS = {"ses": ("se", "replicas", "bytes"),
           "accounts": ("account", "se", "used_bytes", "used_files", "quota_bytes")}


async def _table(request: web.Request, name: str) -> list[dict[str, Any]]:
    if name == "ses":
        db, _ = caller(request, usage_api.routes, "GET", "/usage/ses")
        return await usage.se_usage(db)
    db, user = caller(request, rule_api.routes, "GET", "/quotas")
    rows = await quotas.quotas_and_usage(db, None if user.is_admin else user.sub)
    return [r for r in rows if name_in_vo(user, str(r["account"]))]


@routes.get("/accounting")
async def accounting(request: web.Request) -> web.Response:
    return page(request, "accounting.html", {"ses": await _table(request, "ses"),
                                             "accounts": await _table(request, "accounts")})


@routes.get("/accounting.csv")
async def accounting_csv(request: web.Request) -> web.Response:
    """One table as CSV (`table=ses` or `table=accounts`), for spreadsheets and plots elsewhere."""
    name = request.query.get("table", "ses")
    if name not in COLUMNS:
        raise InvalidInput("table must be ses or accounts")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS[name], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(await _table(request, name))
    return web.Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="cairn-{name}.csv"'})
