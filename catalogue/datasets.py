"""Datasets and containers (Rucio's DIDs): names, records, and their state machine.

Names: `scope:name`. A scope is `[a-z0-9][a-z0-9_.-]{0,63}`; a name is letters, digits and
`_ . - + =`, at most 255 (no `:` or `/`, so a DID is unambiguous in a URL query and on a
command line). A caller may create DIDs in the scopes named after their groups, their VO, or
`user.<sub>`; admins in any scope.

States of a dataset or container:

    open --close--> closed --reopen--> open          (reopen: the owner or an admin)
    open|closed --freeze--> frozen                   (final: nothing changes any more)

Attaching and detaching need the DID open. Changing a DID (attach, detach, close, freeze,
refresh) is for its owner, members of its group, and admins; reopening is for the owner and
admins only, since closing is how a producer tells consumers the content is complete.
Reading a DID and listing its contents needs only the `catalogue.read` scope: DIDs are names a
collaboration shares; a file's replicas still need r on the file (namespace permissions).

A dynamic dataset is defined by a metadata query (and a scope path): its contents are the
query's result as of the last refresh (a snapshot, materialized like any dataset's contents,
so listing and counting cost the same). Files are never attached to or detached from it by
hand; `refresh` re-runs the query while it is open; freezing keeps the last snapshot forever.

Each state change is one `update_one` guarded by the state it leaves, so two racing callers
cannot both succeed, and by no refresh holding the dataset (409 meanwhile: a freeze landing
between a refresh's writes left the "final" snapshot changing under it).

Every DID is announced on the change feed (`did_created`, which subscriptions read) once: it is
inserted marked `unannounced` (a token and its time), its event appended, its mark cleared. A
creator cut short in between (a server killed, a database error) leaves the mark, and
`announce_late` (the subscriber's pass) announces the DIDs whose mark is older than
ANNOUNCE_GRACE, taking each mark over with a write guarded by its lapsed time (two sweepers
never both take it). A creator past half the grace before its append leaves it to them; a
creator cancelled after its insert finishes its announcement. What may still announce a DID
twice: a server killed after its append and before its clear, or
stalled more than half the grace on the way to the database; a second event is harmless (a
subscription's rule id is derived from the DID, its count from the event that made it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalogue import change_feed
from catalogue.directories import now
from catalogue.lfn import ROOT, check_lfn
from catalogue.meta_query import compile_query
from catalogue.metadata_fields import query_fields
from kernel import request_ids
from kernel.db import INDEX_ORDER, Document, IndexSpec, database_errors
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from kernel.marks import Mark, by_ids
from kernel.principal import Principal

DATASETS = "datasets"
# Checked with `fullmatch`: `$` also matches before a final newline, so `match` took "lhcb:name\n".
SCOPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,254}$")
# A dynamic dataset's mark while one call refreshes it (`dataset_refresh.refresh`, `kernel.marks`):
# its state does not change meanwhile, so a close or freeze never lands between its writes.
REFRESHING = "refreshing"
REFRESH_LEASE = dt.timedelta(minutes=2)
# A DID's mark from its insert until its `did_created` event is on the feed (`announce_late`):
# the token of the call announcing it, and since when.
UNANNOUNCED, UNANNOUNCED_SINCE = "unannounced", "unannounced_since"
# How many calls began to change a DID's rows and counts (`catalogue.dataset_count_claims`).
COUNT_CALLS = "count_calls"
# A DID a named creation made: its call's stamp (`catalogue.dataset_routes.create`), so that the
# call sent again (its answer lost) answers the DID instead of 409.
MADE_BY = "made_by"
ANNOUNCE_GRACE = dt.timedelta(seconds=30)
ANNOUNCE_BATCH = 1000  # DIDs announced late per call, at most
DidType = Literal["dataset", "container"]
State = Literal["open", "closed", "frozen"]

INDEXES = [
    # list_dids: datasets.find({scope: s}).sort(name)
    IndexSpec(DATASETS, [("scope", 1), ("name", 1)], name="datasets_by_scope_name"),
    # announce_late: datasets.find({unannounced_since: {$lt: t}}) under INDEX_ORDER (a date bound).
    IndexSpec(DATASETS, [(UNANNOUNCED_SINCE, 1)], name="datasets_unannounced", sparse=True, index_order=True),
]

# state change -> (states it may leave, state it reaches)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "close": (("open",), "closed"),
    "reopen": (("closed",), "open"),
    "freeze": (("open", "closed"), "frozen"),
}


class DidIn(BaseModel):
    """A dataset or container to create."""

    model_config = ConfigDict(extra="forbid")

    did: str
    type: DidType = "dataset"
    query: str | None = Field(None, max_length=10_000, description="dynamic dataset: its metadata query")
    path: str = Field(ROOT, description="dynamic dataset: the directory its query is scoped to")
    description: str = Field("", max_length=2000)
    request_id: str | None = Field(None, pattern=request_ids.PATTERN, description=request_ids.DESCRIPTION)


def check_did(value: object) -> tuple[str, str]:
    """(scope, name) of a valid `scope:name`; InvalidInput naming the rule otherwise."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise InvalidInput(f"a DID is 'scope:name', got {value!r}", details={"did": str(value)})
    scope, name = value.split(":")
    if not SCOPE_PATTERN.fullmatch(scope):
        raise InvalidInput(f"invalid scope {scope!r}: lower-case letters, digits, _ . - (at most 64, "
                           "starting with a letter or digit)", details={"did": value})
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(f"invalid DID name {name!r}: letters, digits, _ . + = - (at most 255, starting with "
                           "a letter or digit)", details={"did": value})
    return scope, name


WILDCARD_SCOPE = "*"


def scope_within_reach(principal: Principal, scope: str) -> bool:
    """Is a DID scope the caller's VO's (always, while the caller is not confined to a VO)?"""
    if not principal.confined or scope in principal.did_scopes:
        return True
    return WILDCARD_SCOPE in principal.did_scopes and scope not in principal.foreign_scopes


def did_within_reach(principal: Principal, did: str) -> bool:
    return scope_within_reach(principal, did.split(":", 1)[0])


def may_create_in(principal: Principal, scope: str) -> bool:
    """A confined caller creates in its VO's scopes (all of them: a VO's scopes are shared by its
    members); otherwise, and in a VO of scope `*`, admins anywhere (within reach) and users in
    their groups', VO's and user scope."""
    if not scope_within_reach(principal, scope):
        return False
    if principal.confined and WILDCARD_SCOPE not in principal.did_scopes:
        return True
    return principal.is_admin or scope in {*principal.groups, principal.vo, f"user.{principal.sub}"}


def may_change(principal: Principal, did: Document) -> bool:
    return principal.is_admin or did.get("owner") == principal.sub or did.get("group") in principal.groups


def did_view(doc: Document) -> dict[str, Any]:
    """The public shape of a DID record."""
    view = {"did": doc["_id"], **{k: v for k, v in doc.items() if k not in ("_id", REFRESHING, UNANNOUNCED,
                                                                     UNANNOUNCED_SINCE, COUNT_CALLS, MADE_BY)}}
    view["dynamic"] = doc.get("query") is not None
    return view


async def get_did(db: AsyncDatabase[Document], did: str) -> Document:
    """The record of a DID; NotFound when there is none."""
    check_did(did)
    with database_errors():
        doc = await db[DATASETS].find_one({"_id": did})
    if doc is None:
        raise NotFound(f"DID {did} does not exist")
    return doc


async def create_did(db: AsyncDatabase[Document], principal: Principal, item: DidIn,
                     stamp: str | None = None) -> Document:
    """Create an open dataset or container owned by the caller. A dynamic dataset's query is
    checked here (400 with the position) and its first snapshot is taken by the caller of this
    function (`dataset_refresh.refresh`). With `stamp` (a named call's), a DID an earlier sending
    of the same call made is answered as it is (409 for any other DID of that name)."""
    scope, name = check_did(item.did)
    if not may_create_in(principal, scope):
        mine = principal.did_scopes if principal.confined and WILDCARD_SCOPE not in principal.did_scopes else (
            *principal.groups, principal.vo, f"user.{principal.sub}")
        raise Forbidden(f"you may create DIDs in the scopes {', '.join(sorted(set(mine)))}, not in {scope}")
    if item.query is not None:
        if item.type != "dataset":
            raise InvalidInput("only datasets can be dynamic (defined by a query)")
        check_lfn(item.path)
        compile_query(item.query, await query_fields(db, principal))
    at = now()
    token = uuid.uuid4().hex
    doc: Document = {"_id": item.did, "scope": scope, "name": name, "type": item.type, "state": "open",
                     "owner": principal.sub, "group": principal.primary_group, "description": item.description,
                     "created": at, "modified": at, UNANNOUNCED: token, UNANNOUNCED_SINCE: at}
    if item.type == "dataset":
        doc.update({"files": 0, "bytes": 0})
    else:
        doc["children"] = 0
    if item.query is not None:
        doc.update({"query": item.query, "path": item.path, "refreshed": None})
    if stamp:
        doc[MADE_BY] = stamp
    try:
        with database_errors():
            await db[DATASETS].insert_one(doc)
    except DuplicateKeyError as exc:
        with database_errors():
            made = await db[DATASETS].find_one({"_id": item.did, MADE_BY: stamp}) if stamp else None
        if made is not None:
            return made
        raise Conflict(f"DID {item.did} exists already") from exc
    # Shielded: a caller cancelled (a client gone) after its insert still announces it, once.
    await asyncio.shield(_announce(db, [doc], token, at))
    del doc[UNANNOUNCED], doc[UNANNOUNCED_SINCE]
    return doc


async def _announce(db: AsyncDatabase[Document], docs: list[Document], token: str, since: dt.datetime) -> None:
    """Append the `did_created` events of DIDs marked by `token` at `since`, then clear the mark
    on those that still carry it; nothing when `since` is half the grace ago (`announce_late` may
    take the mark over)."""
    if not docs or now() - since > ANNOUNCE_GRACE / 2:
        return
    await change_feed.append(db, [change_feed.event("did_created", d["_id"], type=d["type"]) for d in docs])
    with database_errors():
        for flt in by_ids([d["_id"] for d in docs], {UNANNOUNCED: token}):
            await db[DATASETS].update_many(flt, {"$unset": {UNANNOUNCED: "", UNANNOUNCED_SINCE: ""}})


async def announce_late(db: AsyncDatabase[Document], *, grace: dt.timedelta = ANNOUNCE_GRACE) -> int:
    """Announce the DIDs whose creation was cut short between its insert and its event (marked
    longer than `grace`), up to ANNOUNCE_BATCH; returns how many this call announced. Each mark
    is taken over by one write guarded by its lapsed time, so of concurrent callers one announces
    a DID; a caller cut short in turn leaves its own mark to lapse."""
    token, since = uuid.uuid4().hex, now()
    lapsed = {UNANNOUNCED_SINCE: {"$lt": since - grace}}
    with database_errors():
        # Index: datasets_unannounced (only DIDs cut short carry its field).
        found = await db[DATASETS].find(lapsed, {"_id": 1}, comment=INDEX_ORDER).limit(ANNOUNCE_BATCH).to_list()
        ids = [d["_id"] for d in found]
        for flt in by_ids(ids, lapsed):
            await db[DATASETS].update_many(flt, {"$set": {UNANNOUNCED: token, UNANNOUNCED_SINCE: since}})
        taken: list[Document] = []
        for flt in by_ids(ids, {UNANNOUNCED: token}):
            taken += await db[DATASETS].find(flt, {"type": 1}).to_list()
    await _announce(db, taken, token, since)
    return len(taken)


async def change_state(db: AsyncDatabase[Document], principal: Principal, did: str, action: str) -> Document:
    """close, reopen or freeze a DID (see the module docstring for who may do which)."""
    if action not in TRANSITIONS:
        raise InvalidInput(f"unknown state change {action!r}; use one of {', '.join(TRANSITIONS)}")
    doc = await get_did(db, did)
    allowed = principal.is_admin or doc.get("owner") == principal.sub if action == "reopen" \
        else may_change(principal, doc)
    if not allowed:
        raise Forbidden(f"you may not {action} {did} (owner {doc.get('owner')}, group {doc.get('group')})")
    leaving, reaching = TRANSITIONS[action]
    if doc["state"] not in leaving:
        raise Conflict(f"cannot {action} {did}: it is {doc['state']}")
    with database_errors():
        updated = await db[DATASETS].find_one_and_update(
            {"_id": did, "state": doc["state"], **Mark(REFRESHING, REFRESH_LEASE).free()},
            {"$set": {"state": reaching, "modified": now()}}, return_document=True)
    if updated is None:
        if (await get_did(db, did))["state"] == doc["state"]:
            raise Conflict(f"{did} is being refreshed: {action} it once the refresh ends")
        raise Conflict(f"{did} changed state meanwhile; read it again")
    return updated


async def writable_did(db: AsyncDatabase[Document], principal: Principal, did: str, kind: DidType) -> Document:
    """A DID the caller may change, of the kind asked for, and open (Conflict otherwise)."""
    doc = await get_did(db, did)
    if doc["type"] != kind:
        raise InvalidInput(f"{did} is a {doc['type']}, not a {kind}")
    if not may_change(principal, doc):
        raise Forbidden(f"you may not change {did} (owner {doc.get('owner')}, group {doc.get('group')})")
    if doc["state"] != "open":
        raise Conflict(f"{did} is {doc['state']}: contents change only while it is open")
    return doc


async def list_dids(db: AsyncDatabase[Document], scope: str, *, after: str | None = None,
                    limit: int = 1000) -> list[dict[str, Any]]:
    """The DIDs of a scope sorted by name (keyset paging with `after`)."""
    if not SCOPE_PATTERN.fullmatch(scope):
        raise InvalidInput(f"invalid scope {scope!r}")
    query: dict[str, Any] = {"scope": scope}
    if after:
        query["name"] = {"$gt": after}
    with database_errors():
        # Index: datasets_by_scope_name.
        docs = await db[DATASETS].find(query).sort("name", 1).limit(limit).to_list()
    return [did_view(d) for d in docs]
