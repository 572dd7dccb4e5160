"""Token revocations as stored: the collection `token_revocations` (written only here), its
entries, and the test whether an entry refuses a token.

An entry revokes one token by its `jti`, or every token of a subject (issuer + `sub`) issued
before `not_before` (and, while it is in force, the subject's tokens that carry no `iat`). It
reaches only what its revoker may reach: `vo` (None: every VO) and, for a jti entry, `iss` and
`sub` (None: any); see `kernel.token_revocation`. Entries only grow stricter (upserts with
`$max`) and are dropped once `expires` has passed: the revoked token's own expiry (plus clock
skew) when it is known, else the longest a token may live (`token_revocation_keep_s`).

`changed` is stamped by the database server's clock (`$currentDate`), so a process reads what
changed since its last look by that one clock (`read_changed`), trusting no other process's.

An entry's maker (`by`, the first caller who made it) may be held to a number of live entries
(`record`'s `cap`) exactly, however many calls race: a new entry is inserted PENDING (counted,
not in force, not listed), its maker's entries are counted with it, and it is then either put in
force or taken back. Two calls racing for the last place may both be refused; none passes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypedDict

from pymongo.asynchronous.database import AsyncDatabase

from kernel.documents import Document, IndexSpec, database_errors
from kernel.errors import ServiceUnavailable

REVOCATIONS = "token_revocations"
# How far before the newest `changed` it has seen a reader looks again: a write stamped before
# that one but made visible after it (in flight while the reader read) is still found.
REREAD_S = 30.0
INDEXES = [
    IndexSpec(REVOCATIONS, [("changed", 1)], "changed"),  # read_changed
    IndexSpec(REVOCATIONS, [("expires", 1)], "expires"),  # drop_expired
    IndexSpec(REVOCATIONS, [("by.iss", 1), ("by.sub", 1), ("by.vo", 1), ("expires", 1)], "by_revoker"),  # held_by
    IndexSpec(REVOCATIONS, [("vo", 1), ("changed", -1)], "by_vo"),  # listing
]
Kind = Literal["jti", "subject"]
# An entry's mark while the call that inserted it counts its maker's entries (`record`), and when
# it was set: a mark older than PENDING_S was left by a call that died (or stalled: its entry is
# then taken back and it tries again), and the entry goes. A call making the same entry meanwhile
# waits for it up to ADMIT_TRIES * ADMIT_WAIT_S, then answers 503 (retry after PENDING_S).
PENDING, PENDING_AT = "pending", "pending_at"
PENDING_S = 10.0
ADMIT_TRIES, ADMIT_WAIT_S = 40, 0.05


class Revoker(TypedDict):
    """Who made an entry: the issuer and `sub` of their token, and their VO."""

    iss: str
    sub: str
    vo: str


class RevocationDocument(TypedDict, total=False):
    """A document of `token_revocations`."""

    _id: str
    kind: Kind
    jti: str | None
    iss: str | None
    sub: str | None
    vo: str | None
    not_before: int | None
    expires: dt.datetime
    changed: dt.datetime
    by: Revoker
    pending: str
    pending_at: dt.datetime


def same_user(vo: str, one: str, other: str) -> bool:
    """Do two names of a token's `sub` in VO `vo` name one user? A VO's users are named bare
    (`bob`) or VO-qualified (`lhcb:bob`) alike (`catalogue.vos.confine`)."""
    return one == other or one.removeprefix(f"{vo}:") == other.removeprefix(f"{vo}:")


def user_key(sub: str) -> str:
    """The part of a `sub` two names of one user share (the view's index; `same_user` decides)."""
    return sub.split(":", 1)[-1]


@dataclass(frozen=True)
class Revocation:
    """One entry: what it refuses (see the module docstring)."""

    kind: Kind
    expires: dt.datetime
    jti: str | None = None
    iss: str | None = None
    sub: str | None = None
    vo: str | None = None
    not_before: int | None = None

    @property
    def id(self) -> str:
        """The same revocation made twice is one entry (its `expires`, `not_before` raised)."""
        key = json.dumps([self.kind, self.jti, self.iss, self.sub, self.vo])
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def refuses(self, claims: Mapping[str, Any], vo: str) -> bool:
        """Does this entry refuse a token of these (verified) claims, whose VO is `vo`?"""
        if self.iss is not None and claims.get("iss") != self.iss:
            return False
        if self.vo is not None and vo != self.vo:
            return False
        if self.sub is not None and not same_user(vo, str(claims.get("sub")), self.sub):
            return False
        if self.kind == "jti":
            return claims.get("jti") == self.jti
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            return True  # a token that does not say when it was issued may be older
        return self.not_before is not None and iat < self.not_before

    def stricter(self, other: Revocation) -> Revocation:
        """This entry merged with another copy of it: the later expiry and not-before."""
        not_before = max(self.not_before or 0, other.not_before or 0) if self.kind == "subject" else None
        return Revocation(**{**asdict(self), "expires": max(self.expires, other.expires), "not_before": not_before})

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "jti": self.jti, "issuer": self.iss, "user": self.sub, "vo": self.vo,
                "not_before": self.not_before, "expires": self.expires}


def from_document(doc: Mapping[str, Any]) -> Revocation:
    return Revocation(kind=doc["kind"], expires=doc["expires"], jti=doc.get("jti"), iss=doc.get("iss"),
                      sub=doc.get("sub"), vo=doc.get("vo"), not_before=doc.get("not_before"))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def record(db: AsyncDatabase[Document], revocation: Revocation, by: Revoker, *, cap: int | None = None) -> bool:
    """Store an entry (one upsert: made again, it only grows stricter), and drop those past. With
    `cap`, a new entry is stored only if its maker then holds at most `cap` live entries, this one
    counted (see the module docstring); False when it was not (nothing stored). Made again, an
    entry stays its first maker's and counts for nobody else."""
    fields = {"kind": revocation.kind, "jti": revocation.jti, "iss": revocation.iss, "sub": revocation.sub,
              "vo": revocation.vo}
    raised: Document = {"expires": revocation.expires}
    if revocation.not_before is not None:
        raised["not_before"] = revocation.not_before
    stricter = {"$max": raised, "$currentDate": {"changed": True}}
    if cap is None:
        with database_errors():
            await db[REVOCATIONS].update_one({"_id": revocation.id}, {"$setOnInsert": {**fields, "by": by}, **stricter},
                                             upsert=True)
        await drop_expired(db)
        return True
    for _ in range(ADMIT_TRIES):
        with database_errors():
            if (await db[REVOCATIONS].update_one({"_id": revocation.id, PENDING: {"$exists": False}},
                                                 stricter)).matched_count:
                await drop_expired(db)
                return True  # in force already: no new entry
            mark = uuid.uuid4().hex
            made = await db[REVOCATIONS].update_one(
                {"_id": revocation.id},
                {"$setOnInsert": {**fields, "by": by, PENDING: mark, PENDING_AT: now()}, **stricter}, upsert=True)
        if made.upserted_id is not None:
            admitted = await _admit(db, revocation.id, mark, by, cap)
            if admitted is not None:
                return admitted
        else:  # another call's entry, pending: wait until it is in force or taken back (or its mark lapsed)
            await _drop_lapsed(db, revocation.id)
            await asyncio.sleep(ADMIT_WAIT_S)
    raise ServiceUnavailable("the same revocation is being made by another call (or one cut short); retry later",
                             retry_after=math.ceil(PENDING_S))


async def _admit(db: AsyncDatabase[Document], entry_id: str, mark: str, by: Revoker, cap: int) -> bool | None:
    """Count the maker's entries with the pending one `entry_id` (this call's `mark`) and put it in
    force, or take it back past `cap`. None: the mark was gone (it lapsed and the entry was taken
    back while this call stalled): try again."""
    with database_errors():
        if await held_by(db, by) > cap:
            await db[REVOCATIONS].delete_one({"_id": entry_id, PENDING: mark})
            return False
        result = await db[REVOCATIONS].update_one({"_id": entry_id, PENDING: mark}, {
            "$unset": {PENDING: "", PENDING_AT: ""}, "$currentDate": {"changed": True}})
    if not result.matched_count:
        return None
    await drop_expired(db)
    return True


async def _drop_lapsed(db: AsyncDatabase[Document], entry_id: str) -> None:
    """Take back the entry if a call that died left it pending."""
    with database_errors():
        await db[REVOCATIONS].delete_one({"_id": entry_id, PENDING: {"$exists": True},
                                          PENDING_AT: {"$lt": now() - dt.timedelta(seconds=PENDING_S)}})


async def drop_expired(db: AsyncDatabase[Document]) -> int:
    """Remove the entries whose tokens have all expired (index `expires`)."""
    with database_errors():
        result = await db[REVOCATIONS].delete_many({"expires": {"$lt": now()}})
    return result.deleted_count


async def read_changed(db: AsyncDatabase[Document], since: dt.datetime | None) -> list[Document]:
    """The live entries changed at or after `since` by the database's clock (every live one for
    None), oldest change first (index `changed`)."""
    query: Document = {"expires": {"$gte": now()}, PENDING: {"$exists": False}}
    if since is not None:
        query["changed"] = {"$gte": since}
    with database_errors():
        return await db[REVOCATIONS].find(query, {"by": 0}).sort("changed", 1).to_list()


async def held_by(db: AsyncDatabase[Document], by: Revoker) -> int:
    """How many live entries one revoker made, those pending too (index `by_revoker`)."""
    with database_errors():
        return await db[REVOCATIONS].count_documents(
            {"by.iss": by["iss"], "by.sub": by["sub"], "by.vo": by["vo"], "expires": {"$gte": now()}})


async def list_revocations(db: AsyncDatabase[Document], *, vo: str | None, limit: int) -> list[Document]:
    """The live entries, newest change first: those reaching only VO `vo`, or every one for None
    (index `by_vo`)."""
    query: Document = {"expires": {"$gte": now()}, PENDING: {"$exists": False}}
    if vo is not None:
        query["vo"] = vo
    with database_errors():
        return await db[REVOCATIONS].find(query).sort("changed", -1).limit(limit).to_list()
