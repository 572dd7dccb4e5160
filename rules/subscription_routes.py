"""HTTP routes of subscriptions (rules.read to read, rules.write to add and delete)."""

from __future__ import annotations

from aiohttp import web

from catalogue.authorization import vo_query
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, read_model, scopes
from rules import subscriptions
from rules.subscriptions import SubscriptionIn, subscription_view

routes = ApiRoutes("subscriptions")
READ = scopes("rules.read")
WRITE = scopes("rules.write")


@routes.post("/subscriptions", status=201, policy=WRITE, summary="Subscribe new datasets matching a filter to a rule",
             body=SubscriptionIn, responses={400: "bad filter or expression", 409: "exists already"})
async def add(request: web.Request) -> web.Response:
    body = await read_model(request, SubscriptionIn)
    doc = await subscriptions.add_subscription(request.app[DATABASE], principal_of(request), body)
    return json_response(subscription_view(doc), status=201)


@routes.get("/subscriptions", policy=READ, summary="Every subscription", response=JsonList)
async def list_all(request: web.Request) -> web.Response:
    found = await subscriptions.list_subscriptions(request.app[DATABASE], vo_query(principal_of(request)))
    return json_response([subscription_view(d) for d in found])


@routes.get("/subscriptions/{name}", policy=READ, summary="One subscription", responses={404: "no such subscription"})
async def show(request: web.Request) -> web.Response:
    doc = await subscriptions.get_subscription(request.app[DATABASE], principal_of(request), request.match_info["name"])
    return json_response(subscription_view(doc))


@routes.delete("/subscriptions/{name}", policy=WRITE, summary="Remove a subscription (its rules stay)",
               responses={403: "not yours", 404: "no such subscription"})
async def delete(request: web.Request) -> web.Response:
    await subscriptions.delete_subscription(request.app[DATABASE], principal_of(request), request.match_info["name"])
    return json_response({"name": request.match_info["name"], "deleted": True})
