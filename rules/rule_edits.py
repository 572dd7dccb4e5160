"""An account's (or an administrator's) changes to an existing rule: update it, or delete it
(expire it now; the cleaner removes it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import authorize_rule_target
from catalogue.directories import now
from kernel.db import Document, database_errors, increment
from kernel.errors import Conflict, Forbidden, NotFound
from kernel.principal import Principal
from rules.rule_admission import check_room
from rules.rule_contents import did_target
from rules.rule_models import RuleUpdate
from rules.store import get_rule, not_removed
from rules.triggers import RULES


def _may_change(principal: Principal, rule: Document) -> None:
    if not (principal.is_admin or rule["account"] == principal.sub):
        raise Forbidden(f"rule {rule['_id']} belongs to {rule['account']}")


async def update_rule(db: AsyncDatabase[Document], principal: Principal, rule_id: str,
                      update: RuleUpdate, *, retries: int = 3) -> Document:
    """Change a rule's copies (checked against the quota), lifetime, lock flag, comment or
    activity, or resume it (one atomic update; more copies make the rule dirty). An expired rule
    (deleted, or past its lifetime) is refused (409): the cleaner removes it whatever changes;
    not a locked one, which the cleaner leaves (`not_removed`)."""
    rule = await get_rule(db, rule_id)
    _may_change(principal, rule)
    at = now()
    grows = not principal.is_global_admin and _grows(rule, update, at)  # an admin's right no chmod takes
    if grows:  # a rule's locks keep its DID's owner from deleting replicas: more of them need r, as making it
        await authorize_rule_target(db, principal, rule["did"])
    change: dict[str, Any] = {"modified": at}
    inc: dict[str, int] = {}
    if update.copies is not None and update.copies != rule["copies"]:
        if update.copies > rule["copies"]:
            did_type, size = await did_target(db, rule["did"])
            await check_room(db, rule["account"], rule["expression"], update.copies, rule["did"], did_type, size,
                             rule.get("vo"))
        change.update({"copies": update.copies, "dirty": True, "due": at})
        inc["generation"] = 1
    if update.lifetime_s is not None:
        change["expires_at"] = at + dt.timedelta(seconds=update.lifetime_s) if update.lifetime_s else None
    for name in ("locked", "comment", "activity"):
        if getattr(update, name) is not None:
            change[name] = getattr(update, name)
    if update.state == "replicating" and rule["state"] in ("stuck", "suspended"):
        # `resumes` keeps a daemon's failed pass that read the rule before from undoing this
        # (`rules.rule_claims.unresumed`); the repairer's failures are forgiven too.
        change.update({"state": "replicating", "stuck_since": None, "dirty": True, "due": at, "evaluation_failures": 0,
                       "retry_at": None, "repair_failures": 0, "repair_retry_at": None, "error": None,
                       **({"last_error": rule["error"]} if rule.get("error") else {})})
        inc.update(generation=1, resumes=1)
    # An expired rule is being removed (the cleaner may be releasing its locks): not changed. A
    # locked one is not (and unlocking it is how it is let expire). Guarded by the expiry read
    # too, and checked at the write's time: a deletion landing after the read (a copies check
    # reads on) was undone by this write's lifetime, both answering success.
    with database_errors():
        updated = await db[RULES].find_one_and_update(
            {"_id": rule_id, "expires_at": rule.get("expires_at"), **not_removed(now())},
            {"$set": change, **(increment(inc) if inc else {})}, return_document=ReturnDocument.AFTER)
    if updated is not None:
        return await _judged_again(db, principal, rule, updated) if grows else updated
    with database_errors():
        live = await db[RULES].count_documents({"_id": rule_id, **not_removed(now())})
    if live and retries:
        return await update_rule(db, principal, rule_id, update, retries=retries - 1)  # its lifetime changed
    raise Conflict(f"rule {rule_id} has expired and is being removed; make a new rule")


GROWN = ("copies", "expires_at", "locked")  # what growing a rule changes


def _grows(rule: Document, update: RuleUpdate, at: dt.datetime) -> bool:
    """Does the update ask for more of what the rule holds: copies, a later (or no) expiry, a lock?"""
    if update.copies is not None and update.copies > rule["copies"]:
        return True
    if update.locked and not rule.get("locked"):
        return True
    if update.lifetime_s is None:
        return False
    expires = rule.get("expires_at")
    return expires is not None and (not update.lifetime_s or at + dt.timedelta(seconds=update.lifetime_s)
                                    > expires.replace(tzinfo=dt.UTC))


async def _judged_again(db: AsyncDatabase[Document], principal: Principal, rule: Document,
                        updated: Document) -> Document:
    """After an update that grew the rule: the caller's right on its DID judged again as it stands
    now. A chmod or chown that took the caller's r away and returned before the update landed
    refuses it (403) as an update checked after it: the rule's copies, expiry and lock are set
    back to what they were, unless another update changed them since (guarded by their values as
    this one wrote them: the daemons' writes of the rule's state do not keep it from going back)."""
    try:
        await authorize_rule_target(db, principal, rule["did"])
        return updated
    except (Forbidden, NotFound):
        back: dict[str, Any] = {**{f: rule.get(f) for f in GROWN}, "modified": now()}
        more = updated["copies"] != rule["copies"]
        if more:
            back.update({"dirty": True, "due": now()})
        with database_errors():
            await db[RULES].update_one({"_id": rule["_id"], **{f: updated.get(f) for f in GROWN}},
                                       {"$set": back, **(increment({"generation": 1}) if more else {})})
        raise


async def delete_rule(db: AsyncDatabase[Document], principal: Principal, rule_id: str) -> Document:
    """Expire a rule now (the cleaner releases its locks); a locked rule is refused."""
    rule = await get_rule(db, rule_id)
    _may_change(principal, rule)
    if rule.get("locked"):
        raise Conflict(f"rule {rule_id} is locked; unlock it first")
    with database_errors():
        updated = await db[RULES].find_one_and_update(
            {"_id": rule_id, "locked": False}, {"$set": {"expires_at": now(), "modified": now()}},
            return_document=ReturnDocument.AFTER)
    if updated is None:
        raise Conflict(f"rule {rule_id} was locked meanwhile")
    return updated
