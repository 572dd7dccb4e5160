"""Rules: the list, a rule's page with its locks, and the wizard with a live preview."""

from __future__ import annotations

import math
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from cairn.portal.access import caller, page_size
from cairn.portal.render import page
from catalogue.authorization import require_visible_rule, se_in_vo, visible_rules
from kernel.errors import CairnError, InvalidInput
from kernel.web import validation_message
from rules import quotas, rule_admission, store
from rules import routes as api
from rules.lock_views import visible_locks
from rules.rule_models import RuleIn, rule_view
from rules.se_expression import validate

routes = web.RouteTableDef()
STATES = ("replicating", "ok", "stuck", "suspended")
MAX_BATCHES = 10


@routes.get("/rules")
async def rule_list(request: web.Request) -> web.Response:
    """One page of the rules the user may see, newest first, filtered by account, DID and state;
    `after` is the last rule of the previous page (one the user may see: a hidden rule's id
    answers like a missing one and never appears in a link)."""
    db, user = caller(request, api.routes, "GET", "/rules")
    filters = {"account": request.query.get("account") or None, "did": request.query.get("did") or None,
               "state": request.query.get("state") or None}
    after = request.query.get("after") or None
    if after is not None:
        await require_visible_rule(db, user, await store.get_rule(db, after))
    limit = page_size(request)
    shown: list[dict[str, Any]] = []
    for _ in range(MAX_BATCHES):  # rules on hidden files are skipped; bounded, so a page stays cheap
        batch = await store.page_rules(db, **filters, after=after, limit=limit + 1)
        shown += await visible_rules(db, user, batch)
        if len(shown) > limit or len(batch) <= limit:
            break
        after = batch[-1]["_id"]
    more = len(shown) > limit or (len(shown) > 0 and len(batch) > limit)
    rows = shown[:limit]
    return page(request, "rules.html", {"rules": [rule_view(d, user) for d in rows], "states": STATES,
                                        "next_after": rows[-1]["_id"] if more and rows else None})


@routes.get("/rules/{id}")
async def rule_page(request: web.Request) -> web.Response:
    """A rule, and one page of its locks on files the user can reach (each one's state and last error)."""
    db, user = caller(request, api.routes, "GET", "/rules/{id}/locks")
    doc = await store.get_rule(db, request.match_info["id"])
    await require_visible_rule(db, user, doc)
    locks, next_after = await visible_locks(db, user, doc["_id"], state=request.query.get("state") or None,
                                            after=request.query.get("after") or None, limit=page_size(request))
    return page(request, "rule.html", {"rule": rule_view(doc, user), "locks": locks, "next_after": next_after,
                                       "states": ("replicating", "ok", "stuck")})


@routes.get("/rule-wizard")
async def wizard(request: web.Request) -> web.Response:
    """The form; its fields come from the query string, so a half-filled wizard can be shared."""
    caller(request, api.routes, "POST", "/rules")
    # The form names the rule it makes: sent twice (a double click, a resubmission), it makes one.
    return page(request, "wizard.html", {"form": dict(request.query), "problem": None,
                                         "request_id": uuid.uuid4().hex})


@routes.get("/rule-wizard/preview")
async def preview(request: web.Request) -> web.Response:
    """The SEs of the user's VO an expression means now (as GET /expressions/resolve answers), and
    the user's quota room on each (an htmx fragment)."""
    db, user = caller(request, api.routes, "GET", "/expressions/resolve")
    expression = request.query.get("expression", "").strip()
    context: dict[str, Any] = {"expression": expression, "ses": [], "room": {}, "problem": None}
    if expression:
        try:
            ses = [se for se in await rule_admission.resolve_expression(db, expression) if se_in_vo(user, se["name"])]
            context["ses"] = ses
            context["room"] = await quotas.room(db, user.sub, [se["name"] for se in ses])
        except CairnError as exc:
            context["problem"] = exc.message
    return page(request, "fragments/preview.html", context)


@routes.post("/rule-wizard")
async def create(request: web.Request) -> web.Response:
    """Create the rule through the same checks as POST /api/v1/rules, then show its page."""
    db, user = caller(request, api.routes, "POST", "/rules")
    form = {k: str(v) for k, v in (await request.post()).items() if k != "csrf"}
    try:
        item = _rule_in(form)
        for expression in (item.expression, item.source_expression):
            if expression:
                validate(expression)
        doc = await store.create_rule(db, user, item)
    except CairnError as exc:
        # No rule stands made by this form (refused, or withdrawn): sent again, it is a new call.
        form.pop("request_id", None)
        return page(request, "wizard.html", {"form": form, "problem": exc.message, "request_id": uuid.uuid4().hex},
                    status=exc.status)
    raise web.HTTPSeeOther(f"/ui/rules/{doc['_id']}")


def _rule_in(form: dict[str, str]) -> RuleIn:
    fields: dict[str, Any] = {"did": form.get("did", "").strip(), "expression": form.get("expression", "").strip(),
                              "copies": form.get("copies") or "1"}
    if form.get("lifetime_days"):
        try:
            days = float(form["lifetime_days"])
        except ValueError as exc:
            raise InvalidInput("lifetime must be a number of days") from exc
        if not math.isfinite(days):  # int() of an infinity raised OverflowError: a 500
            raise InvalidInput("lifetime must be a finite number of days")
        fields["lifetime_s"] = int(days * 86400)
    if form.get("comment"):
        fields["comment"] = form["comment"]
    if form.get("request_id"):
        fields["request_id"] = form["request_id"]
    try:
        return RuleIn.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(f"invalid rule: {validation_message(exc)[0]}") from exc
