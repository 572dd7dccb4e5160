"""Replication rules (Rucio's): "N copies of a DID on the SEs of an expression, for a lifetime".

A rule is one document in `rules`; its locks (one per file and SE) are in `rules.locks`.
The rule daemons (`rules.evaluator`, `rules.repairer`, `rules.cleaner`) work on one rule
at a time under the rule's own lease (`claim`), so the rule's locks and lock counters are only
ever changed by the holder of that lease.

States:

    replicating --all locks ok--> ok --content grows--> replicating
    replicating --a lock's transfer failed for good--> stuck --repaired--> replicating
    stuck --stuck longer than rules.suspend_after_s--> suspended  (left alone until updated)
    any --its evaluation raised rules.suspend_after_failures passes in a row--> suspended

A failed evaluation is retried after a growing delay (`rules.backoff`, `retry_at`). A suspended
rule is resumed by an update (`cairn rule update --resume`), which also resets its count of failed
evaluations (`evaluation_failures`) and its delay, and moves its `error` to `last_error`. An
expired rule is the cleaner's whatever its state.

A new rule, a rule whose copies changed and a rule whose DID gained or lost content are `dirty`
(see `rules.triggers`): the evaluator (re)computes its locks. Deleting a rule sets its
expiry to now; the cleaner releases its locks and removes it.

Grouping decides where files go: ALL puts every file of the DID on the same SEs, DATASET the
files of each dataset on the same SEs, NONE chooses per file.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, NotRequired, cast

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import file_rules
from catalogue.authorization import name_in_vo, vo_stamp
from catalogue.dataset_contents import DATASET_FILES, linked_dids
from catalogue.datasets import DATASETS, check_did
from catalogue.directories import now
from catalogue.files import FILES
from catalogue.lfn import check_lfn
from catalogue.storage_elements import SES
from catalogue.vos import registry
from kernel import claims
from kernel.bounds import MAX_LIFETIME_S
from kernel.db import (
    INDEX_ORDER,
    Document,
    IndexSpec,
    count_by,
    database_errors,
    increment,
    read_by_ids,
    stamp_missing,
)
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from kernel.principal import DEFAULT_VO, Principal
from rules import quotas
from rules.se_expression import resolve, validate
from rules.triggers import RULES

Grouping = Literal["ALL", "DATASET", "NONE"]
STATES = ("replicating", "ok", "stuck", "suspended")

INDEXES = [
    # rules of a DID (re-evaluation trigger, `rule list --did`)
    # the rules on a DID: made on the embedded database too, read one DID at a time under INDEX_ORDER
    # (`rules.triggers`: every attach marks the rules on the DID and the containers above it)
    IndexSpec(RULES, [("did", 1)], name="rules_by_did", index_order=True),
    IndexSpec(RULES, [("account", 1), ("created", -1)], name="rules_by_account"),
    # claim(): the evaluator's, repairer's and cleaner's next rule
    IndexSpec(RULES, [("state", 1), ("due", 1)], name="rules_by_state_due", index_order=True),
    IndexSpec(RULES, [("dirty", 1)], name="rules_dirty", index_order=True),
    IndexSpec(RULES, [("expires_at", 1)], name="rules_by_expiry", sparse=True, index_order=True),
    # count_by_vo_and_state (GET /metrics), on the embedded database
    IndexSpec(RULES, [("state", 1), ("vo", 1)], name="rules_by_state_vo", group_count=True),
]


class RulePlacement(BaseModel):
    """What a rule asks of its copies: a rule's own (`RuleIn`) and a subscription's template for
    the rules it makes (`rules.subscriptions`), with the same bounds."""

    model_config = ConfigDict(extra="forbid")

    copies: int = Field(..., ge=1, le=100)
    expression: str = Field(..., min_length=1, max_length=2000, description="RSE expression, e.g. tier=1&kind=disk")
    grouping: Grouping = "DATASET"
    lifetime_s: int | None = Field(None, gt=0, le=MAX_LIFETIME_S,
                                     description="the rule expires this long after creation")
    weight: str | None = Field(None, max_length=64, description="SE attribute preferred by its numeric value")
    activity: str = Field("default", max_length=64)
    source_expression: str | None = Field(None, max_length=2000, description="copy only from replicas on these SEs")
    comment: str = Field("", max_length=2000)
    priority: int = Field(3, ge=1, le=5)


class RuleIn(RulePlacement):
    """A rule to create."""

    did: str = Field(..., description="scope:name of a dataset or container, or a file's LFN")
    locked: bool = Field(False, description="a locked rule cannot be deleted, nor expire, until unlocked")
    account: str | None = Field(None, max_length=128, description="owning account (admins only; default: caller)")


class Rule(claims.Leased):
    """A document of `rules` as `create_rule` stores it (the daemons add `evaluated`,
    `ok_since`, `last_repair`); the `locks_*` counters count its locks by state."""

    _id: str
    vo: str
    did: str
    did_type: str
    account: str
    copies: int
    expression: str
    grouping: Grouping
    weight: str | None
    activity: str
    source_expression: str | None
    locked: bool
    comment: str
    priority: int
    subscription: str | None
    state: str
    error: str | None
    stuck_since: dt.datetime | None
    created: dt.datetime
    modified: dt.datetime
    expires_at: dt.datetime | None
    dirty: bool
    generation: int
    due: dt.datetime
    # set by `rules.wake`: wakes counted, and the earliest a wake may bring `due` to
    wakes: NotRequired[int]
    next_wake: NotRequired[dt.datetime]
    # set by `rules.evaluator`: its passes over the rule that raised in a row (0 after one that did
    # not), and the earliest it takes the rule again after one that raised (`rules.backoff`)
    evaluation_failures: NotRequired[int]
    retry_at: NotRequired[dt.datetime | None]
    # the same of `rules.cleaner`'s passes over the expired rule
    cleaning_failures: NotRequired[int]
    cleaning_retry_at: NotRequired[dt.datetime | None]
    # set by `rules.repairer` alike: its failed repairs in a row, and when it may try again
    repair_failures: NotRequired[int]
    repair_retry_at: NotRequired[dt.datetime | None]
    # set by a resume: the error the rule had until then (its `error` is cleared)
    last_error: NotRequired[str | None]
    unplaced: int
    locks_replicating: int
    locks_ok: int
    locks_stuck: int


class RuleUpdate(BaseModel):
    """What may change on an existing rule."""

    model_config = ConfigDict(extra="forbid")

    copies: int | None = Field(None, ge=1, le=100)
    lifetime_s: int | None = Field(None, ge=0, le=MAX_LIFETIME_S, description="from now; 0 removes the expiry")
    locked: bool | None = None
    comment: str | None = Field(None, max_length=2000)
    activity: str | None = Field(None, max_length=64)
    state: Literal["replicating"] | None = Field(None, description="resume a suspended or stuck rule")


# What a rule's reader who is neither its account nor an administrator sees of a dataset or
# container rule's error (`rule_view`): a stuck file's, or a failed evaluation's, that may name
# a file too.
ERROR_WITHHELD = "the reason is shown to the rule's account and administrators"


def rule_view(doc: Document, viewer: Principal) -> dict[str, Any]:
    """The public shape of a rule, as `viewer` (one allowed to see it) is shown it. A rule's error
    names one of its files and quotes a transfer's error (URLs, paths): on a dataset or container,
    whose readers may not reach every file in it, only the rule's account and administrators see
    it (a hidden file answers as a missing one); a file rule's readers reach its file."""
    view = {"id": doc["_id"], **{k: v for k, v in doc.items() if k not in ("_id", claims.OWNER, claims.EXPIRES)}}
    on_file = str(doc.get("did", "")).startswith("/")
    if not (on_file or viewer.is_admin or doc.get("account") == viewer.sub):
        for field in ("error", "last_error"):
            if view.get(field):
                view[field] = ERROR_WITHHELD
        if isinstance(view.get("last_repair"), dict) and view["last_repair"].get("reason"):
            view["last_repair"] = {**view["last_repair"], "reason": ERROR_WITHHELD}
    view["locks"] = {s: int(doc.get(f"locks_{s}", 0)) for s in ("replicating", "ok", "stuck")}
    for s in ("replicating", "ok", "stuck"):
        view.pop(f"locks_{s}", None)
    return view


async def all_ses(db: AsyncDatabase[Document]) -> list[Document]:
    """Every SE as the expression parser wants it (name, site, kind, attributes, switches, space)."""
    with database_errors():
        docs = await db[SES].find({}).to_list()
    return [{**d, "name": d["_id"]} for d in docs]


async def rule_ses(db: AsyncDatabase[Document], vo: str | None) -> list[Document]:
    """The SEs the rules of VO `vo` (a rule's `vo` stamp) may place copies on, as the expression
    parser wants them: every SE, or the VO's own where the VO lists SEs; one the VO switched off
    for writing is not writable for them (`catalogue.vos`, on top of the SE's own switch). The
    rules' creation, evaluation and repair all place within these."""
    ses = await all_ses(db)
    registered = (await registry(db)).get(vo) if vo else None
    if registered is None or not registered.ses:
        return ses
    return [{**se, "write_enabled": se.get("write_enabled", True) and registered.ses[se["name"]].write_enabled}
            for se in ses if se["name"] in registered.ses]


async def resolve_expression(db: AsyncDatabase[Document], expression: str) -> list[Document]:
    """The SEs an expression means now, sorted by name (ExpressionError if it does not parse)."""
    ses = await all_ses(db)
    names = resolve(expression, ses)
    return sorted((se for se in ses if se["name"] in names), key=lambda se: se["name"])


async def did_target(db: AsyncDatabase[Document], did: str) -> tuple[str, int]:
    """(type, bytes) of a rule's DID: a file (LFN), dataset or container; NotFound otherwise."""
    with database_errors():
        if did.startswith("/"):
            check_lfn(did)
            doc = await db[FILES].find_one({"_id": did}, {"size": 1})
            if doc is None:
                raise NotFound(f"file {did} does not exist")
            return "file", int(doc.get("size", 0))
        check_did(did)
        doc = await db[DATASETS].find_one({"_id": did})
        if doc is None:
            raise NotFound(f"DID {did} does not exist")
        if doc["type"] == "dataset":
            return "dataset", int(doc.get("bytes", 0))
        datasets = await datasets_below(db, did)
        found = [d async for d in read_by_ids(db[DATASETS], datasets, {"bytes": 1})]
        # An upper bound: a file in two of the datasets is in both sums (see `distinct_bytes`).
        return "container", sum(int(d.get("bytes", 0)) for d in found)


async def distinct_bytes(db: AsyncDatabase[Document], container: str) -> int:
    """The bytes of the distinct files below a container (a file in several of its datasets once):
    one read of each dataset's memberships, holding the LFNs seen.
    Index: dataset_files_by_did_lfn (one dataset at a time: a `$in` of them reads every membership
    of every dataset on the embedded database)."""
    datasets = await datasets_below(db, container)
    seen: set[str] = set()
    total = 0
    for dataset in datasets:
        with database_errors():
            rows = await db[DATASET_FILES].find({"did": dataset}, {"lfn": 1, "size": 1}, comment=INDEX_ORDER) \
                .batch_size(10_000).to_list()
        for row in rows:
            if row["lfn"] not in seen:
                seen.add(row["lfn"])
                total += int(row.get("size", 0))
    return total


async def check_room(db: AsyncDatabase[Document], account: str, expression: str, copies: int, did: str,
                     did_type: str, size: int, vo: str | None = None) -> list[str]:
    """`check_placeable` for a DID; a container over quota by its datasets' sums is checked again
    by its distinct files (read only then: the sums are cheap, and usually fit)."""
    try:
        return await check_placeable(db, account, expression, copies, size, vo)
    except QuotaExceeded:
        if did_type != "container":
            raise
        exact = await distinct_bytes(db, did)
        if exact == size:
            raise
    return await check_placeable(db, account, expression, copies, exact, vo)


async def datasets_below(db: AsyncDatabase[Document], container: str) -> list[str]:
    """Every dataset reachable below a container, sorted (`dataset_contents.linked_dids`)."""
    seen, _ = await linked_dids(db, [container], down=True)
    return sorted([d["_id"] async for d in read_by_ids(db[DATASETS], seen, {"_id": 1}, flt={"type": "dataset"})])


async def rule_files(db: AsyncDatabase[Document], rule: Document) -> AsyncIterator[tuple[str, str, int]]:
    """Every file a rule covers as (group, lfn, size); the group follows the rule's grouping."""
    did, grouping = rule["did"], rule["grouping"]
    if rule["did_type"] == "file":
        with database_errors():
            doc = await db[FILES].find_one({"_id": did}, {"size": 1})
        if doc is not None:
            yield did, did, int(doc.get("size", 0))
        return
    datasets = [did] if rule["did_type"] == "dataset" else await datasets_below(db, did)
    seen: set[str] = set()
    for dataset in datasets:
        # One cursor per dataset read to its end before yielding (FerretDB's SQLite backend blocks
        # writers behind an open cursor, and would scan the collection once per page).
        # Index: dataset_files_by_did_lfn.
        with database_errors():
            rows = await db[DATASET_FILES].find({"did": dataset}, {"lfn": 1, "size": 1}, comment=INDEX_ORDER) \
                .sort("lfn", 1).batch_size(10_000).to_list()
        for row in rows:
            if row["lfn"] in seen:
                continue
            if rule["did_type"] == "container":
                seen.add(row["lfn"])
            group = did if grouping == "ALL" else dataset if grouping == "DATASET" else str(row["lfn"])
            yield group, row["lfn"], int(row.get("size", 0))


async def check_placeable(db: AsyncDatabase[Document], account: str, expression: str, copies: int,
                          size: int, vo: str | None = None) -> list[str]:
    """The SEs a rule may use; InvalidInput or QuotaExceeded (nothing written) when it cannot be met.
    A rule of a registered VO uses only the VO's SEs (if it lists any) within the VO's quotas."""
    names = sorted(resolve(expression, await rule_ses(db, vo)))
    if not names:
        raise InvalidInput(f"expression {expression!r} matches no storage element", details={"expression": expression})
    if copies > len(names):
        raise InvalidInput(f"{copies} copies asked for but {expression!r} matches only {len(names)} SE(s): "
                           f"{', '.join(names)}", details={"ses": names})
    room = await quotas.room_in_vo(db, account, vo, names)
    fits = [se for se in names if room[se] is None or (room[se] or 0) >= size]
    if len(fits) < copies:
        short = {se: room[se] for se in names if se not in fits}
        left = ", ".join(f"{se}={b}" for se, b in short.items())
        raise QuotaExceeded(f"account {account} needs room for {size} bytes on {copies} SE(s) of {expression!r} "
                            f"but has it on {len(fits)}; bytes left: {left}",
                            details={"needed_bytes": size, "room": short})
    return names


def check_account(principal: Principal, account: str | None, what: str) -> None:
    """Only administrators act for another account, and a VO's administrators only for accounts
    of their VO (whose quotas they manage: `catalogue.authorization.name_in_vo`)."""
    if account is None or account == principal.sub:
        return
    if not principal.is_admin:
        raise Forbidden(f"only administrators {what} for another account")
    if not name_in_vo(principal, account):
        raise Forbidden(f"account {account} is not of VO {principal.vo}")


async def create_rule(db: AsyncDatabase[Document], principal: Principal, item: RuleIn, *,
                      rule_id: str | None = None, subscription: str | None = None) -> Document:
    """Check and store a new rule (`dirty`: the evaluator makes its locks). Refuses with 4xx and
    writes nothing on a bad or unmatched expression, too many copies, an unknown DID or no quota."""
    check_account(principal, item.account, "create rules")
    account = item.account or principal.sub
    validate(item.expression)
    if item.source_expression:
        validate(item.source_expression)
    did_type, size = await did_target(db, item.did)
    await check_room(db, account, item.expression, item.copies, item.did, did_type, size, vo_stamp(principal))
    at = now()
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
    with database_errors():
        await db[RULES].insert_one(cast(Document, doc))
    if did_type == "file" and not await file_rules.name_file(db, item.did, doc["_id"]):
        await _withdraw(db, doc["_id"])
        raise Conflict(f"file {item.did} was being moved or removed while the rule was made; the rule was "
                       "withdrawn, try again")
    return cast(Document, doc)


async def _withdraw(db: AsyncDatabase[Document], rule_id: str) -> None:
    """A rule on a file being moved or removed is withdrawn the way a deletion does (the cleaner
    cancels what its evaluation may have started)."""
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
        change.update({"state": "replicating", "stuck_since": None, "dirty": True, "due": at, "evaluation_failures": 0,
                       "retry_at": None, "error": None, **({"last_error": rule["error"]} if rule.get("error") else {})})
        inc["generation"] = 1
    # An expired rule is being removed (the cleaner may be releasing its locks): not changed. A
    # locked one is not (and unlocking it is how it is let expire). Guarded by the expiry read
    # too, and checked at the write's time: a deletion landing after the read (a copies check
    # reads on) was undone by this write's lifetime, both answering success.
    with database_errors():
        updated = await db[RULES].find_one_and_update(
            {"_id": rule_id, "expires_at": rule.get("expires_at"), **not_removed(now())},
            {"$set": change, **(increment(inc) if inc else {})}, return_document=ReturnDocument.AFTER)
    if updated is not None:
        return updated
    with database_errors():
        live = await db[RULES].count_documents({"_id": rule_id, **not_removed(now())})
    if live and retries:
        return await update_rule(db, principal, rule_id, update, retries=retries - 1)  # its lifetime changed
    raise Conflict(f"rule {rule_id} has expired and is being removed; make a new rule")


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


async def claim(db: AsyncDatabase[Document], worker: str, query: Document | Sequence[Document], *, lease_s: float,
                sort: str = "due") -> Document | None:
    """Take the next rule that no daemon holds, under a lease: the first by `sort` matching query,
    or matching the first of several queries that matches one (`kernel.claims.claim_in_turn`).

    Read under INDEX_ORDER (states are strings, `dirty` and `locked` booleans, `due` and
    `expires_at` dates or null): the rule daemons look every cycle, and on the embedded database
    a look that read every rule cost more than a core at 100k rules (bench/idle.py --of rules);
    a query whose conditions an index holds (a state, a flag, a date bound) reads only its rules."""
    taken = await claims.claim_in_turn(db[RULES], worker, [query] if isinstance(query, dict) else query,
                                       lease_s=lease_s, sort=[(sort, 1)], limit=1, comment=INDEX_ORDER)
    return taken[0] if taken else None


async def renew(db: AsyncDatabase[Document], rule_id: str, worker: str, *, lease_s: float) -> bool:
    """Extend a claimed rule's lease; False when `worker` no longer holds it (or the rule is gone)."""
    return bool(await claims.renew(db[RULES], [rule_id], worker, lease_s=lease_s))


async def set_fields(db: AsyncDatabase[Document], rule_id: str, fields: dict[str, Any], *,
                     make_dirty: bool = False, guard: dict[str, Any] | None = None) -> bool:
    """Record what a daemon holding the rule found (evaluation results, errors); with
    `make_dirty`, also ask for a new evaluation (bumping `generation`). Only while the rule
    matches `guard`; False when it did not."""
    update: dict[str, Any] = {"$set": {**fields, **({"dirty": True} if make_dirty else {})}}
    if make_dirty:
        update.update(increment({"generation": 1}))
    with database_errors():
        result = await db[RULES].update_one({"_id": rule_id, **(guard or {})}, update)
    return result.matched_count == 1


async def count_failure(db: AsyncDatabase[Document], rule_id: str, worker: str,
                        field: str = "evaluation_failures") -> int | None:
    """Count one more failed pass (an evaluation's, or a cleaning's or a repair's with `field`
    `cleaning_failures` or `repair_failures`) of a rule `worker` holds; the count now, or None when `worker` no longer
    holds the rule."""
    with database_errors():
        counted = await db[RULES].find_one_and_update(
            {"_id": rule_id, claims.OWNER: worker}, increment({field: 1}),
            return_document=ReturnDocument.AFTER)  # no projection: FerretDB 1.24 has none here
    return None if counted is None else int(counted[field])


async def remove(db: AsyncDatabase[Document], rule: Document, worker: str) -> bool:
    """Delete a rule whose locks are gone (the cleaner, holding its lease); a file it names is
    unnamed first (`catalogue.file_rules`: never a name without its rule)."""
    if rule.get("did_type") == "file":
        await file_rules.unname_file(db, rule["did"], rule["_id"])
    with database_errors():
        result = await db[RULES].delete_one({"_id": rule["_id"], claims.OWNER: worker})
    return result.deleted_count == 1


async def clear_dirty(db: AsyncDatabase[Document], rule_id: str, generation: int) -> bool:
    """The evaluation that read generation `generation` is done: clear `dirty` unless the content
    changed again meanwhile."""
    with database_errors():
        result = await db[RULES].update_one({"_id": rule_id, "generation": generation}, {"$set": {"dirty": False}})
    return result.modified_count == 1


async def release(db: AsyncDatabase[Document], rule: Document, worker: str, fields: dict[str, Any], *,
                  guard: dict[str, Any] | None = None) -> bool:
    """Give a claimed rule back, setting fields (only the lease holder can, and only while the
    rule matches `guard`)."""
    return await claims.release(db[RULES], rule["_id"], worker, guard=guard,
                                update={"$set": {**fields, "modified": now()}})


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
