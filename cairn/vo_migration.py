"""Migrating data stored before VOs were recorded to a VO (`cairn vo migrate`, issue 14).

Objects that are not namespace entries (rules, subscriptions, requests, jobs, transformations,
productions) carry the `vo` of whoever made them; those stored before VOs existed have none and
count as the default VO's (`kernel.principal.DEFAULT_VO`). Migrating stamps the chosen VO on
them, each through its owning package's `adopt_unowned`; run again, it changes nothing.
Files, directories and datasets need no stamp: their VO is the one whose root or DID scope
holds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import vos
from kernel.db import Document
from kernel.principal import DEFAULT_VO
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response
from productions import production, transformations
from rules import store, subscriptions
from transfers import requests
from wms import jobs

routes = ApiRoutes("vos")

Adopt = Callable[[AsyncDatabase[Document], str], Awaitable[int]]
ADOPTERS: dict[str, Adopt] = {
    "rules": store.adopt_unowned,
    "subscriptions": subscriptions.adopt_unowned,
    "transfer_requests": requests.adopt_unowned,
    "jobs": jobs.adopt_unowned,
    "transformations": transformations.adopt_unowned,
    "productions": production.adopt_unowned,
}


async def migrate(db: AsyncDatabase[Document], vo: str = DEFAULT_VO) -> dict[str, int]:
    """Stamp VO `vo` (which must be registered) on every object without one: count per collection."""
    await vos.get_vo(db, vo)
    return {collection: await adopt(db, vo) for collection, adopt in ADOPTERS.items()}


@routes.post("/vos/{name}/migrate", policy=ADMIN,
             summary="Give every rule, request, job, ... stored without a VO to this VO (idempotent)",
             responses={404: "no such VO"})
async def migrate_route(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    adopted = await migrate(request.app[DATABASE], name)
    return json_response({"vo": name, "adopted": adopted})
