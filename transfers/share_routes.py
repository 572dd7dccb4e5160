"""HTTP routes for the shares of the transfer queue (`transfers.shares`): VOs' and activities'."""

from __future__ import annotations

import re

from aiohttp import web

from catalogue.vos import set_transfer_share
from kernel.errors import InvalidInput
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, read_model, scopes
from transfers import shares
from transfers.turns import backlog_by_vo

routes = ApiRoutes("transfers")

SHARE_ERRORS = {400: "the share is not a number above 0 and at most 1e6",
                403: "not an administrator of the installation"}


@routes.get("/transfer-shares", policy=scopes("transfers.read"),
            summary="Shares of the transfer queue: each VO's (yours only, unless global admin) with its backlogged "
                    "flows, and each activity's")
async def list_shares(request: web.Request) -> web.Response:
    principal = principal_of(request)
    db = request.app[DATABASE]
    vos = await shares.vo_shares(db)
    flows = await backlog_by_vo(db, "transfer")
    activities = await shares.activity_shares(db, fresh=True)
    return json_response({
        "vos": [{"vo": vo, "share": share, "backlogged": flows.get(vo, 0)}
                for vo, share in vos.shares.items() if principal.sees_vo(vo)],
        "activities": {name: share for name, share in activities.items() if name != shares.DEFAULT_ACTIVITY},
        "default_activity_share": shares.activity_share(activities, shares.DEFAULT_ACTIVITY),
    })


@routes.put("/transfer-shares/vos/{vo}", policy=ADMIN, body=shares.ShareBody,
            summary="Set a VO's share of the transfer queue against other VOs (default 1)",
            responses={**SHARE_ERRORS, 404: "no such VO"})
async def set_vo_share(request: web.Request) -> web.Response:
    body = await read_model(request, shares.ShareBody)
    vo = await set_transfer_share(request.app[DATABASE], request.match_info["vo"], body.share)
    return json_response({"vo": vo.name, "share": vo.transfer_share})


@routes.put("/transfer-shares/activities/{activity}", policy=ADMIN, body=shares.ShareBody,
            summary="Set an activity's share of its VO's part of the transfer queue ('*': every unlisted "
                    "activity's; default 1)", responses=SHARE_ERRORS)
async def set_activity_share(request: web.Request) -> web.Response:
    activity = _activity(request)
    body = await read_model(request, shares.ShareBody)
    await shares.set_activity_share(request.app[DATABASE], activity, body.share)
    return json_response({"activity": activity, "share": body.share})


@routes.delete("/transfer-shares/activities/{activity}", policy=ADMIN,
               summary="Give an activity the default share again",
               responses={403: "not an administrator of the installation", 404: "no share of its own"})
async def forget_activity_share(request: web.Request) -> web.Response:
    activity = _activity(request)
    await shares.forget_activity_share(request.app[DATABASE], activity)
    return json_response({"activity": activity, "share": None})


def _activity(request: web.Request) -> str:
    activity = request.match_info["activity"]
    if not re.fullmatch(shares.ACTIVITY_PATTERN, activity):
        raise InvalidInput(f"invalid activity {activity!r}: letters, digits, '_', '.', '-' and spaces, "
                           "at most 64, or '*' for every unlisted one")
    return activity
