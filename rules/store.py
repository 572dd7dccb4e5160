"""The `rules` collection (see `rules.rule_models` for what a rule is): its indexes, the making of
a rule, and reads and counts of rules."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import cast

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalogue import file_rules
from catalogue.authorization import authorize_rule_target, vo_stamp
from catalogue.directories import now
from kernel.db import Document, IndexSpec, count_by, database_errors, stamp_missing
from kernel.errors import Conflict, Forbidden, NotFound
from kernel.principal import DEFAULT_VO, Principal
from rules.rule_admission import check_account, check_room
from rules.rule_contents import did_target
from rules.rule_models import STATES, Rule, RuleIn
from rules.rule_requests import made_before, request_digest, rule_id_for
from rules.se_expression import validate
from rules.triggers import RULES

INDEXES = [
    # rules of a DID (re-evaluation trigger, `rule list --did`)
    # the rules on a DID: made on the embedded database too, read by `$in` under INDEX_ORDER
    # (`rules.triggers`: every attach marks the rules on the DID and the containers above it)
    IndexSpec(RULES, [("did", 1)], name="rules_by_did", index_order=True),
    IndexSpec(RULES, [("account", 1), ("created", -1)], name="rules_by_account"),
    # rule_claims.claim(): the evaluator's, repairer's and cleaner's next rule
    IndexSpec(RULES, [("state", 1), ("due", 1)], name="rules_by_state_due", index_order=True),
    IndexSpec(RULES, [("dirty", 1)], name="rules_dirty", index_order=True),
    IndexSpec(RULES, [("expires_at", 1)], name="rules_by_expiry", sparse=True, index_order=True),
    # count_by_vo_and_state (GET /metrics), on the embedded database
    IndexSpec(RULES, [("state", 1), ("vo", 1)], name="rules_by_state_vo", group_count=True),
]


async def create_rule(db: AsyncDatabase[Document], principal: Principal, item: RuleIn, *,
                      rule_id: str | None = None, subscription: str | None = None,
                      subscription_event: int | None = None) -> Document:
    """Check and store a new rule (`dirty`: the evaluator makes its locks). Refuses with 4xx and
    writes nothing on a bad or unmatched expression, too many copies, an unknown DID, a DID the
    caller may not make a rule on (`authorize_rule_target`) or no quota. The DID is judged again
    once the rule is in: a chmod or chown that took the caller's r away and returned before the
    rule landed withdraws it (403), as a making checked after it is refused."""
    check_account(principal, item.account, "create rules")
    account = item.account or principal.sub
    validate(item.expression)
    if item.source_expression:
        validate(item.source_expression)
    digest = ""
    if item.request_id is not None:  # sent again (its answer lost): the rule the first sending made
        digest = request_digest({**item.model_dump(exclude={"request_id"}), "account": account})
        rule_id = rule_id_for(principal, item.request_id)
        if (before := await made_before(db, rule_id, digest)) is not None:
            return await _finish_making(db, principal, before, again=True)
    judged = not principal.is_global_admin  # whose right no chmod or chown takes away
    if judged:
        await authorize_rule_target(db, principal, item.did)
    did_type, size = await did_target(db, item.did)
    await check_room(db, account, item.expression, item.copies, item.did, did_type, size, vo_stamp(principal))
    at = now()
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored: a sending again answers the same
    doc: Rule = {
        "_id": rule_id or uuid.uuid4().hex, "vo": vo_stamp(principal), "did": item.did, "did_type": did_type,
        "account": account,
        "copies": item.copies, "expression": item.expression, "grouping": item.grouping, "weight": item.weight,
        "activity": item.activity, "source_expression": item.source_expression, "locked": item.locked,
        "comment": item.comment, "priority": item.priority, "subscription": subscription,
        "state": "replicating", "error": None, "stuck_since": None, "created": at, "modified": at,
        "expires_at": at + dt.timedelta(seconds=item.lifetime_s) if item.lifetime_s else None,
        "dirty": True, "generation": 0, "due": at, "unplaced": 0,
        "locks_replicating": 0, "locks_ok": 0, "locks_stuck": 0, "lease_owner": None, "lease_expires": None,
    }
    if subscription_event is not None:
        doc["subscription_event"] = subscription_event
    if item.request_id is not None:
        doc["request"] = digest  # rule_requests.REQUEST
    try:
        with database_errors():
            await db[RULES].insert_one(cast(Document, doc))
    except DuplicateKeyError:
        if item.request_id is None:
            raise
        # The same call sent twice at once: the other sending made it.
        before = await made_before(db, doc["_id"], digest)
        if before is None:
            raise Conflict(f"rule {doc['_id']}, made by this request, has been removed since; use a new "
                           "request id to make another") from None
        return await _finish_making(db, principal, before, again=True)
    return await _finish_making(db, principal, cast(Document, doc), again=False)


async def _finish_making(db: AsyncDatabase[Document], principal: Principal, doc: Document, *,
                         again: bool) -> Document:
    """The steps of a making after its insert, done again by a sending that found the rule its
    first sending made (`again`: cut short in between, or its answer lost): a file rule names its
    file, and the DID is judged again (a chmod or chown that took the caller's r away withdraws it,
    403)."""
    if doc.get("did_type") == "file" and not await file_rules.name_file(db, doc["did"], doc["_id"],
                                                                        unless_named=again):
        await _withdraw(db, doc["_id"])
        raise Conflict(f"file {doc['did']} was being moved or removed while the rule was made; the rule was "
                       "withdrawn, try again")
    try:
        if not principal.is_global_admin:
            await authorize_rule_target(db, principal, doc["did"])
    except (Forbidden, NotFound):
        await _withdraw(db, doc["_id"])
        raise
    return doc


async def _withdraw(db: AsyncDatabase[Document], rule_id: str) -> None:
    """A rule on a file being moved or removed, or on a DID its maker lost the right to meanwhile,
    is withdrawn the way a deletion does (the cleaner cancels what its evaluation may have started)."""
    with database_errors():
        await db[RULES].update_one({"_id": rule_id}, {"$set": {"locked": False, "expires_at": now()}})


async def name_its_file(db: AsyncDatabase[Document], rule: Document) -> bool:
    """Before each evaluation of a rule on a file DID: the rule names its file, which its making
    does right after storing it, so a making cut short in between (a killed server) left the file
    movable; named here where it is not yet (a write that matches nothing otherwise). False when
    the file is being moved or removed: the rule is withdrawn, as its making would have done."""
    if rule.get("did_type") != "file" or await file_rules.name_file(db, rule["did"], rule["_id"], unless_named=True):
        return True
    await _withdraw(db, rule["_id"])
    return False


async def count_by_vo_and_state(db: AsyncDatabase[Document]) -> list[Document]:
    """Rules per VO and state, every VO's (for monitoring): `[{vo, state, n}]` (no `vo`: DEFAULT_VO)."""
    return await count_by(db[RULES], ["state", "vo"], absent={"vo": DEFAULT_VO})


async def get_rule(db: AsyncDatabase[Document], rule_id: str) -> Document:
    """One rule; NotFound if there is none."""
    with database_errors():
        doc = await db[RULES].find_one({"_id": rule_id})
    if doc is None:
        raise NotFound(f"rule {rule_id} does not exist")
    return doc


async def list_rules(db: AsyncDatabase[Document], *, account: str | None = None, did: str | None = None,
                     state: str | None = None, limit: int = 1000, where: Document | None = None) -> list[Document]:
    """Rules, newest first, filtered by account, DID and state (and `where`, e.g. the caller's VO)."""
    query = {k: v for k, v in {"account": account, "did": did, "state": state}.items() if v is not None}
    query.update(where or {})
    with database_errors():
        # Index: rules_by_account or rules_by_did.
        return await db[RULES].find(query).sort("created", -1).limit(limit).to_list()


async def page_rules(db: AsyncDatabase[Document], *, account: str | None = None, did: str | None = None,
                     state: str | None = None, after: str | None = None, limit: int = 100) -> list[Document]:
    """One page of `list_rules`, continuing after the rule `after` (keyset on created then id);
    an unknown `after` is NotFound."""
    query: Document = {k: v for k, v in {"account": account, "did": did, "state": state}.items() if v is not None}
    if after is not None:
        last = await get_rule(db, after)
        query["$or"] = [{"created": {"$lt": last["created"]}},
                        {"created": last["created"], "_id": {"$lt": last["_id"]}}]
    with database_errors():
        # Index: rules_by_account or rules_by_did.
        return await db[RULES].find(query).sort([("created", -1), ("_id", -1)]).limit(limit).to_list()


def not_removed(at: dt.datetime) -> Document:
    """The rules the cleaner is not removing at `at`: unexpired ones, and locked ones whatever
    their expiry (a locked rule does not expire until unlocked: the cleaner takes only unlocked
    ones, so one past its lifetime is kept, evaluated, and may be changed, e.g. unlocked)."""
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": at}}, {"locked": True}]}


async def adopt_unowned(db: AsyncDatabase[Document], vo: str) -> int:
    """Give the rules stored before VOs were recorded (no `vo`) to VO `vo` (`cairn vo migrate`)."""
    return await stamp_missing(db[RULES], "vo", vo)


async def count_open_of_vo(db: AsyncDatabase[Document], vo: str, limit: int) -> int:
    """Rules of VO `vo` not being removed (a deleted rule expires; the cleaner then removes it), at most
    `limit` counted: a VO is not deleted while it has some (`catalogue.vo_removal`)."""
    with database_errors():
        # Index: rules_by_state_vo.
        return await db[RULES].count_documents({"state": {"$in": list(STATES)}, "vo": vo, **not_removed(now())},
                                                limit=limit)
