"""HTTP routes of rules, their locks, quotas and RSE-expression resolution.

Reading rules needs `rules.read`, creating and changing them `rules.write` (only the owning
account or an admin changes a rule). Making a rule also needs r on its file, or the right to
change its dataset or container; rules on files the caller cannot see are not shown to them
(`catalogue.authorization`). Quotas are set by administrators and read by anyone with
`rules.read` (a non-admin sees only their own account's); the installation's administrators
rebuild the usage they are checked against from the locks (`rules.quota_rebuild`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from catalogue.authorization import (
    name_in_vo,
    require_quota_admin,
    require_visible_rule,
    se_in_vo,
    visible_rules,
    vo_query,
)
from kernel.errors import InvalidInput
from kernel.responses import JsonList, RebuildBody
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes
from rules import quota_rebuild, quotas, rule_admission, rule_edits, store
from rules.lock_views import visible_locks
from rules.quotas import QuotaIn
from rules.rule_models import RuleIn, RuleUpdate, rule_view
from rules.se_expression import validate

routes = ApiRoutes("rules")
READ = scopes("rules.read")
WRITE = scopes("rules.write")
BAD_RULE = {400: "bad or unmatched expression, too many copies", 404: "no such DID", 422: "over quota"}


@routes.get("/expressions/resolve", policy=scopes("catalogue.read"), summary="The SEs an RSE expression means now",
            query={"expression": "e.g. tier=1&kind=disk"}, responses={400: "the expression does not parse"})
async def resolve_expression(request: web.Request) -> web.Response:
    expression = request.query.get("expression", "")
    if not expression.strip():
        raise InvalidInput("query parameter 'expression' is required")
    ses = await rule_admission.resolve_expression(request.app[DATABASE], expression)
    principal = principal_of(request)
    return json_response({"expression": expression, "ses": [se["name"] for se in ses
                                                            if se_in_vo(principal, se["name"])]})


@routes.post("/rules", status=201,
             policy=WRITE, summary="Create a rule (its locks follow from the evaluator)", body=RuleIn,
             responses=BAD_RULE)
async def create(request: web.Request) -> web.Response:
    body = await read_model(request, RuleIn)
    db, principal = request.app[DATABASE], principal_of(request)
    for expression in (body.expression, body.source_expression):
        if expression:
            validate(expression)  # a broken body is a 400 before the DID is looked at
    doc = await store.create_rule(db, principal, body)  # judges the DID (authorize_rule_target)
    return json_response(rule_view(doc, principal_of(request)), status=201)


@routes.get("/rules", policy=READ, summary="Rules, newest first",
            query={"account": "owning account", "did": "scope:name or LFN", "state": "replicating, ok, stuck...",
                   "limit": "1..10000 (1000)"}, response=JsonList)
async def list_rules(request: web.Request) -> web.Response:
    db, principal = request.app[DATABASE], principal_of(request)
    found = await store.list_rules(db, account=request.query.get("account"),
                                   did=request.query.get("did"), state=request.query.get("state"),
                                   limit=query_int(request, "limit", 1000, minimum=1, maximum=10_000),
                                   where=vo_query(principal))
    return json_response([rule_view(d, principal) for d in await visible_rules(db, principal, found)])


async def visible_rule(request: web.Request) -> dict[str, Any]:
    """The rule named in the path, 404 when missing or on a file the caller cannot see."""
    db = request.app[DATABASE]
    doc = await store.get_rule(db, request.match_info["id"])
    await require_visible_rule(db, principal_of(request), doc)
    return doc


@routes.get("/rules/{id}", policy=READ, summary="One rule with its lock counts", responses={404: "no such rule"})
async def show(request: web.Request) -> web.Response:
    return json_response(rule_view(await visible_rule(request), principal_of(request)))


@routes.get("/rules/{id}/locks", policy=READ, summary="One page of a rule's locks (on files the caller can reach)",
            query={"state": "replicating, ok or stuck", "after": "last lock id of the previous page",
                   "limit": "1..10000 (1000)"}, response=JsonList)
async def locks(request: web.Request) -> web.Response:
    db = request.app[DATABASE]
    await visible_rule(request)
    page, _ = await visible_locks(db, principal_of(request), request.match_info["id"],
                                  state=request.query.get("state"), after=request.query.get("after"),
                                  limit=query_int(request, "limit", 1000, minimum=1, maximum=10_000))
    return json_response([{"id": lock.pop("_id"), **lock} for lock in page])


@routes.patch("/rules/{id}", policy=WRITE, summary="Change copies, lifetime, lock flag, comment, activity; resume",
              body=RuleUpdate, responses={403: "not your rule", 404: "no such rule", 422: "over quota"})
async def update(request: web.Request) -> web.Response:
    body = await read_model(request, RuleUpdate)
    await visible_rule(request)
    doc = await rule_edits.update_rule(request.app[DATABASE], principal_of(request), request.match_info["id"], body)
    return json_response(rule_view(doc, principal_of(request)))


@routes.delete("/rules/{id}", policy=WRITE, summary="Delete a rule (expires now; the cleaner releases its locks)",
               responses={403: "not your rule", 404: "no such rule", 409: "the rule is locked"})
async def delete(request: web.Request) -> web.Response:
    await visible_rule(request)
    doc = await rule_edits.delete_rule(request.app[DATABASE], principal_of(request), request.match_info["id"])
    return json_response(rule_view(doc, principal_of(request)))


@routes.get("/quotas", policy=READ, summary="Quotas and usage per account and SE",
            query={"account": "one account (non-admins: always their own)"}, response=JsonList)
async def list_quotas(request: web.Request) -> web.Response:
    principal = principal_of(request)
    account = request.query.get("account") if principal.is_admin else principal.sub
    rows = await quotas.quotas_and_usage(request.app[DATABASE], account)
    return json_response([r for r in rows if name_in_vo(principal, str(r["account"]))])


@routes.put("/quotas", policy=WRITE, body=QuotaIn, responses={403: "not an admin (of this account's VO)"},
            summary="Set the bytes an account's rules may lock on an SE (admins; a VO's admins for its members)")
async def put_quota(request: web.Request) -> web.Response:
    require_quota_admin(principal_of(request))
    body = await read_model(request, QuotaIn)
    require_quota_admin(principal_of(request), body.account, body.se)
    return json_response(await quotas.set_quota(request.app[DATABASE], body))


@routes.delete("/quotas", policy=WRITE, summary="Remove a quota (the account is then unlimited there)",
               query={"account": "account", "se": "SE"},
               responses={403: "not an admin (of this account's VO)", 404: "no such quota"})
async def delete_quota(request: web.Request) -> web.Response:
    account, se = request.query.get("account", ""), request.query.get("se", "")
    require_quota_admin(principal_of(request), account, se)
    await quotas.delete_quota(request.app[DATABASE], account, se)
    return json_response({"account": account, "se": se, "deleted": True})


@routes.post("/quotas/rebuild", policy=ADMIN, body=RebuildBody,
             summary="Recount quota usage from the rule locks; report (and fix) drift")
async def rebuild_usage(request: web.Request) -> web.Response:
    body = await read_model(request, RebuildBody)
    return json_response(await quota_rebuild.rebuild(request.app[DATABASE], fix=body.fix))
