"""Subscriptions: a filter on new datasets plus a rule template; every dataset created after
the subscription that matches gets the rule, owned by the subscription's account.

The filter looks at a dataset's DID record (datasets carry no user metadata of their own):
`scopes` (any of), `name_pattern` (a regular expression searched in the name, by RE2:
`kernel.patterns`), `owners` (any
of), `dynamic` (true or false). An empty filter matches every new dataset.

The `rule-subscriptions` daemon (`rules.subscriber`) reads the `did_created` events of
the catalogue's change feed and calls `apply_to_new` with the new DIDs: each subscription older
than a new dataset that matches it gives it its rule (a rule's id is derived from the
subscription and the DID, so an event handled twice creates one rule), counted once in its
`rules_created` (`rules.subscription_counts`). A rule that cannot be created (over quota, no SE)
is recorded in the subscription's `errors`.

A subscription acts as its maker as the VO's registry has them at each application
(`maker_now`): an administrator's role only while listed (or given by the maker's token); a maker
listed among the VO's members when subscribing and no longer listed (nor an admin), or whose VO
is gone, gets no rules, and the subscription says why in `inactive` (cleared when it applies
again). A subscription stored before these checks (no `member_listed`) keeps no `admin` of its
stored scopes in a registered VO (only the registry's, as now), and its maker, unlisted in a VO
that lists members, gets no rules. The groups stay those of the maker's token when subscribing:
Cairn keeps no record of a user's groups (they come from the issuer's tokens).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalogue.authorization import require_vo, vo_stamp
from catalogue.datasets import DATASETS, did_within_reach
from catalogue.directories import now
from catalogue.vos import Vo, confine_owner, qualified, registry
from kernel.daemon import one_of_many
from kernel.db import Document, IndexSpec, database_errors, read_by_ids, stamp_missing
from kernel.errors import CairnError, Conflict, Forbidden, InvalidInput, NotFound
from kernel.patterns import compiled, searches
from kernel.principal import ADMIN_SCOPE, DEFAULT_VO, GLOBAL_VO, Principal
from kernel.tokens import granted_scopes
from rules import subscription_counts
from rules.rule_admission import check_account
from rules.rule_models import RuleIn, RulePlacement
from rules.se_expression import validate
from rules.store import create_rule

SUBSCRIPTIONS = subscription_counts.SUBSCRIPTIONS
log = logging.getLogger("cairn.rules")

INDEXES: list[IndexSpec] = []


class DatasetFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(default_factory=list, max_length=1000)
    name_pattern: str | None = Field(None, max_length=500)
    owners: list[str] = Field(default_factory=list, max_length=1000)
    dynamic: bool | None = None

    @field_validator("name_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compiled(value)  # PatternError (a ValueError): a 400 with the reason
        return value

    def matches(self, did: Document) -> bool:
        """Whether a dataset's record passes the filter (the pattern matched in linear time,
        `kernel.patterns`)."""
        return (did.get("type") == "dataset"
                and (not self.scopes or did.get("scope") in self.scopes)
                and (self.name_pattern is None or searches(self.name_pattern, str(did.get("name", ""))))
                and (not self.owners or did.get("owner") in self.owners)
                and (self.dynamic is None or (did.get("query") is not None) == self.dynamic))


class RuleTemplate(RulePlacement):
    """The rule a subscription gives each dataset it matches: bounded as a rule is (a template the
    rules could not take stopped the subscriber at the first dataset it matched)."""


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    filter: DatasetFilter = Field(default_factory=DatasetFilter)
    rule: RuleTemplate
    account: str | None = Field(None, max_length=128, description="owner of the rules (admins only; default: caller)")
    comment: str = Field("", max_length=2000)


def subscription_view(doc: Document) -> dict[str, Any]:
    return {**{k: v for k, v in doc.items() if k != "_id"}, "name": doc.get("name", doc["_id"])}


def subscription_id(principal: Principal, name: str) -> str:
    """A subscription's `_id`: its name qualified by the VO (`catalogue.vos.qualified`), so each
    VO has its own names and another VO's subscription is simply not found."""
    return qualified(principal.vo, name) if principal.confined else name


async def add_subscription(db: AsyncDatabase[Document], principal: Principal, item: SubscriptionIn) -> Document:
    """Store a subscription; it applies to datasets created from now on."""
    check_account(principal, item.account, "subscribe")
    validate(item.rule.expression)
    if item.rule.source_expression:
        validate(item.rule.source_expression)
    at = now()
    account = item.account or principal.sub
    vo = (await registry(db)).get(vo_stamp(principal))
    # The rights a matching dataset is checked against later are the subscriber's, as now (the
    # VO's registry's roles as they are then: `maker_now`).
    doc: Document = {"_id": subscription_id(principal, item.name), "name": item.name, "vo": vo_stamp(principal),
                     "account": account, "member_listed": vo is not None and _bare(vo, account) in vo.members,
                     "groups": list(principal.groups), "scopes": stored_scopes(principal),
                     "filter": item.filter.model_dump(), "rule": item.rule.model_dump(), "comment": item.comment,
                     "created": at, "rules_created": 0, "errors": {}}
    try:
        with database_errors():
            await db[SUBSCRIPTIONS].insert_one(doc)
    except DuplicateKeyError as exc:
        raise Conflict(f"subscription {item.name} exists already") from exc
    return doc


def stored_scopes(principal: Principal) -> list[str]:
    """The scopes a subscription acts with: its maker's, but `admin` only where the maker's token
    carried it. An administrator by the VO's registry (`catalogue.vos.confine`) is found one again
    at each application, from the registry as it is then: stored, the role outlived its removal,
    and the subscription went on making rules on any dataset of the VO."""
    granted = granted_scopes(principal.claims)
    kept = principal.scopes if ADMIN_SCOPE in granted or not principal.claims else principal.scopes - {ADMIN_SCOPE}
    return sorted(kept | {"rules.write"})


async def list_subscriptions(db: AsyncDatabase[Document], where: Document | None = None) -> list[Document]:
    """Every subscription (of the VO `where` names, e.g. `vo_query`)."""
    with database_errors():
        return await db[SUBSCRIPTIONS].find(where or {}).sort("_id", 1).to_list()


async def get_subscription(db: AsyncDatabase[Document], principal: Principal, name: str) -> Document:
    """One subscription of the caller's VO; 404 for a missing one and another VO's alike."""
    with database_errors():
        doc = await db[SUBSCRIPTIONS].find_one({"_id": subscription_id(principal, name)})
    missing = f"subscription {name} does not exist"
    if doc is None:
        raise NotFound(missing)
    require_vo(principal, doc, missing)
    return doc


async def delete_subscription(db: AsyncDatabase[Document], principal: Principal, name: str) -> None:
    """Remove a subscription (the rules it made stay)."""
    doc = await get_subscription(db, principal, name)
    if not (principal.is_admin or doc["account"] == principal.sub):
        raise Forbidden(f"subscription {name} belongs to {doc['account']}")
    with database_errors():
        await db[SUBSCRIPTIONS].delete_one({"_id": doc["_id"]})


def rule_id_for(subscription: str, did: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"cairn-subscription:{subscription}:{did}").hex


async def apply_to_new(db: AsyncDatabase[Document], dids: Sequence[str], events: Sequence[int] | None = None) -> int:
    """Give newly created DIDs (from the change feed's `did_created` events, whose sequence
    numbers `events` are, in the same order) the rules of every subscription that matches them
    and is older than them; returns how many rules were made. Given their events, the rules are
    counted once however often they are given (`rules.subscription_counts`)."""
    at = dict(zip(dids, events, strict=True)) if events is not None else {}
    found = [d async for d in read_by_ids(db[DATASETS], dids, flt={"type": "dataset"})]
    new = sorted(found, key=lambda d: d["created"])
    made = 0
    for subscription in await list_subscriptions(db) if new else []:
        made += await _apply_isolated(db, subscription, [d for d in new if d["created"] >= subscription["created"]],
                                      at)
    return made


async def _apply_isolated(db: AsyncDatabase[Document], subscription: Document, new: list[Document],
                          at: Mapping[str, int]) -> int:
    """`_apply`, its own error (a filter stored before filters had their checks) kept in its
    `errors` while the others go on: the feed's position is every subscription's, and one
    subscription's error held them all at that batch."""
    async def apply() -> int:
        try:
            return await _apply(db, subscription, new, at)
        except ValidationError as exc:  # its stored filter: said as pydantic says what is wrong with it
            raise InvalidInput(exc.errors()[0]["msg"]) from exc

    made, why = await one_of_many(apply(), f"subscription {subscription['_id']}", log)
    if why is not None:
        await subscription_counts.record(db, subscription, {}, {"subscription": (f"not applied: {why}", None)})
    return made or 0


def _bare(vo: Vo, account: str) -> str:
    return account.removeprefix(f"{vo.name}:")


async def maker_now(db: AsyncDatabase[Document], subscription: Document) -> Principal | str:
    """The principal a subscription acts as at this application: its maker with the stored groups
    and scopes, the roles the VO's registry gives now (`confine_owner`); or why it acts as nobody
    (the maker left the VO's members, or the VO is gone). See the module docstring."""
    vo_name = subscription.get("vo") or DEFAULT_VO
    vos = await registry(db)
    vo = vos.get(vo_name)
    scopes = frozenset(subscription.get("scopes") or ["rules.write"])
    account = str(subscription["account"])
    if vos and vo is None and vo_name != GLOBAL_VO:
        return f"its VO {vo_name} no longer exists"
    if vo is not None:
        legacy = "member_listed" not in subscription
        listed = _bare(vo, account) in vo.members or _bare(vo, account) in vo.admins
        if not listed and (subscription.get("member_listed") or (legacy and vo.members)):
            return f"its account {account} is no longer a member of VO {vo.name}"
        if legacy:  # its `admin` may be the registry's then: only the registry's now
            scopes -= {ADMIN_SCOPE}
    return await confine_owner(db, Principal(sub=account, vo=vo_name, groups=tuple(subscription.get("groups") or ()),
                                             scopes=scopes))


async def _apply(db: AsyncDatabase[Document], subscription: Document, new: list[Document],
                 at: Mapping[str, int]) -> int:
    """Make the subscription's rules on the new DIDs it matches, then count them and keep the
    refusals (`rules.subscription_counts`); returns how many rules this call made."""
    if not new:
        return 0
    wanted = DatasetFilter.model_validate(subscription["filter"])
    principal = await maker_now(db, subscription)
    await _mark_inactive(db, subscription, principal if isinstance(principal, str) else None)
    if isinstance(principal, str):
        return 0
    made: dict[str, int | None] = {}
    existing: dict[str, tuple[str, int]] = {}  # rule id: (DID, event), for rules made already
    errors: dict[str, tuple[str, int | None]] = {}
    for did in new:
        if not wanted.matches(did) or not did_within_reach(principal, did["_id"]):
            continue  # another VO's datasets are not this subscription's business
        event, rule_id = at.get(did["_id"]), rule_id_for(subscription["_id"], did["_id"])
        try:
            item = RuleIn(did=did["_id"], **subscription["rule"])
            # The same checks as POST /rules (`create_rule`), as the subscriber: a dataset the
            # subscriber may not make a rule on gets none (and the refusal is kept in `errors`).
            await create_rule(db, principal, item, rule_id=rule_id, subscription=subscription["_id"],
                              subscription_event=event)
            made[did["_id"]] = event
        except DuplicateKeyError:
            if event is not None and subscription_counts.uncounted(subscription, event):
                existing[rule_id] = (did["_id"], event)  # made by an application cut short before its count?
        except ValidationError as exc:  # a template stored before its bounds were a rule's
            errors[did["_id"].replace(".", "_")] = (
                f"the subscription's rule is not valid: {exc.errors()[0]['msg']}", event)
        except CairnError as exc:
            if exc.status >= 500:
                raise
            errors[did["_id"].replace(".", "_")] = (exc.message, event)
    made_now = len(made)
    for rule_id in await subscription_counts.made_for(db, subscription["_id"],
                                                      {r: event for r, (_, event) in existing.items()}):
        did_name, event = existing[rule_id]
        made[did_name] = event
    await subscription_counts.record(db, subscription, made, errors)
    return made_now


async def _mark_inactive(db: AsyncDatabase[Document], subscription: Document, why: str | None) -> None:
    """Say (or stop saying) in `inactive` why the subscription makes no rules now."""
    if subscription.get("inactive") == why:
        return
    if why is not None:
        log.warning("subscription %s makes no rules: %s", subscription["_id"], why)
    with database_errors():
        await db[SUBSCRIPTIONS].update_one({"_id": subscription["_id"]}, {"$set": {"inactive": why}})


async def adopt_unowned(db: AsyncDatabase[Document], vo: str) -> int:
    """Give the subscriptions stored before VOs were recorded (no `vo`) to VO `vo` (`cairn vo migrate`)."""
    return await stamp_missing(db[SUBSCRIPTIONS], "vo", vo)


async def count_of_vo(db: AsyncDatabase[Document], vo: str, limit: int) -> int:
    """Subscriptions of VO `vo` (each gives rules to new datasets until removed), at most `limit`
    counted: a VO is not deleted while it has some (`catalogue.vo_removal`)."""
    with database_errors():
        return await db[SUBSCRIPTIONS].count_documents({"vo": vo}, limit=limit)
