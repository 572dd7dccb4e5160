"""Quotas: how many bytes an account's rules may lock on an SE, and what they lock now.

- `quotas`: `_id` `<account>@<se>` with `account`, `se`, `bytes` (set by administrators). An SE
  without a quota for the account is not limited (quotas are opt-in per account and SE).
- `account_usage`: `_id` `<account>@<se>` with `files` and `bytes` locked by the account's
  rules on the SE, kept with `$inc` as locks are created and released (never by scanning),
  each lock counted once however many calls race to write or release it (`rules.locks`), and
  once when a call is cut short between its writes (its NOTES, `rules.quota_notes`);
  `rules.quota_rebuild` recounts it from the locks.

A rule is refused at creation when fewer SEs of its expression than its copies have room for
the DID's bytes; the evaluator places files that arrive later only where there is room. Room is
read, then taken: locks are charged by `reserve`, a conditional `$inc` that applies only while
the account's usage on the SE leaves room for them under its quota, so rules of one account
placed at the same moment by several daemons (each read the same room) cannot together take the
account past its quota: the later ones' locks on that SE are refused and placed again next time.
A VO's quota (over all its accounts) is checked after the charge, which is given back if the VO's
accounts together lock more than it.

Sizes are what clients claim (never checked against storage), so where the account has no quota
its usage may pass the int64 range: a `$inc` past it was refused by the database, and so was every
later charge and release of that account on that SE (every rule made or removed there). Each
charge is a `$inc` guarded against passing the range, or, for a sum past it, the usage set to
its bound and marked SATURATED (`kernel.counters`; not exact any more: `cairn quota rebuild`
recounts it). Under a quota the usage stays within it (`reserve`'s filter).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalogue.directories import now
from catalogue.vos import Vo, registry
from kernel.bounds import Size
from kernel.counters import SATURATED, bounded, counter_write
from kernel.db import Document, IndexSpec, database_errors, increment, read_by_ids
from kernel.errors import Conflict, NotFound
from kernel.principal import DEFAULT_VO

QUOTAS = "quotas"
ACCOUNT_USAGE = "account_usage"
COUNTERS = ("files", "bytes")
NOTES = "notes"  # on a usage record: the notes of the calls that changed it and are not settled (`rules.quota_notes`)
WRITE_TRIES = 5

INDEXES = [
    # quotas_and_usage(account)
    IndexSpec(QUOTAS, [("account", 1), ("se", 1)], name="quotas_by_account"),
    IndexSpec(ACCOUNT_USAGE, [("account", 1), ("se", 1)], name="account_usage_by_account"),
]


@dataclass(frozen=True)
class Noted:
    """A call's notes (`rules.quota_notes`): its token, and per SE the note written in the same
    update as the SE's charge."""

    token: str
    notes: Mapping[str, Document] = field(default_factory=dict)

    def fields(self, se: str) -> Document:
        """The `$set` of the note on `se`'s record (nothing when it has none)."""
        return {note_field(self.token): self.notes[se]} if se in self.notes else {}


def note_field(token: str) -> str:
    return f"{NOTES}.{token}"


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(..., min_length=1, max_length=128)
    se: str = Field(..., min_length=1, max_length=64)
    bytes: Size


def key(account: str, se: str) -> str:
    return f"{account}@{se}"


async def set_quota(db: AsyncDatabase[Document], quota: QuotaIn) -> Document:
    """Create or change the quota of an account on an SE."""
    doc = {"account": quota.account, "se": quota.se, "bytes": quota.bytes, "modified": now()}
    with database_errors():
        await db[QUOTAS].update_one({"_id": key(quota.account, quota.se)}, {"$set": doc}, upsert=True)
    return doc


async def delete_quota(db: AsyncDatabase[Document], account: str, se: str) -> None:
    """Remove a quota (the account is then unlimited on that SE)."""
    with database_errors():
        result = await db[QUOTAS].delete_one({"_id": key(account, se)})
    if result.deleted_count == 0:
        raise NotFound(f"no quota for {account} on {se}")


async def quotas_and_usage(db: AsyncDatabase[Document], account: str | None = None) -> list[dict[str, Any]]:
    """Every (account, SE) with a quota or usage: `{account, se, quota, used_bytes, used_files}`,
    and `saturated` where the usage passed the int64 range (see the module docstring)."""
    query = {"account": account} if account else {}
    with database_errors():
        quotas = {d["_id"]: d for d in await db[QUOTAS].find(query).to_list()}
        usage = {d["_id"]: d for d in await db[ACCOUNT_USAGE].find(query).to_list()}
    rows = []
    for name in sorted(set(quotas) | set(usage)):
        q, u = quotas.get(name, {}), usage.get(name, {})
        rows.append({"account": q.get("account") or u.get("account"), "se": q.get("se") or u.get("se"),
                     "quota_bytes": q.get("bytes"), "used_bytes": int(u.get("bytes", 0)),
                     "used_files": int(u.get("files", 0)), **({"saturated": True} if u.get(SATURATED) else {})})
    return rows


async def room(db: AsyncDatabase[Document], account: str, ses: Iterable[str]) -> dict[str, int | None]:
    """Bytes the account may still lock on each SE (None: no quota there), in two `_id $in` reads."""
    ids = [key(account, se) for se in sorted(set(ses))]
    with database_errors():
        quotas = {d["se"]: int(d["bytes"]) for d in await db[QUOTAS].find({"_id": {"$in": ids}}).to_list()}
        used = {d["se"]: int(d.get("bytes", 0)) for d in await db[ACCOUNT_USAGE].find({"_id": {"$in": ids}}).to_list()}
    return {se: (quotas[se] - used.get(se, 0) if se in quotas else None) for se in sorted(set(ses))}


async def within_vo_quota(db: AsyncDatabase[Document], vo: Vo, room: dict[str, int | None]) -> dict[str, int | None]:
    """`room` cut to what the VO may still lock on each SE: its quota there (`catalogue.vos`) less
    what all its accounts lock (accounts are VO-qualified names, bare in DEFAULT_VO)."""
    limits = _vo_limits(vo, room)
    if not limits:
        return room
    used = await _vo_usage(db, vo, limits)
    cut = dict(room)
    for se, limit in limits.items():
        left = int(limit or 0) - used.get(se, 0)
        cut[se] = left if room[se] is None else min(left, room[se] or 0)
    return cut


def _vo_limits(vo: Vo, ses: Iterable[str]) -> dict[str, int]:
    """The VO's quota on each of ses that it has one on."""
    return {se: int(vo.ses[se].quota_bytes or 0) for se in ses
            if se in vo.ses and vo.ses[se].quota_bytes is not None}


async def _vo_usage(db: AsyncDatabase[Document], vo: Vo, ses: Iterable[str]) -> dict[str, int]:
    """Bytes all the VO's accounts lock on each of ses (accounts are VO-qualified names, bare in
    DEFAULT_VO): one aggregation."""
    pattern = "^[^:]*$" if vo.name == DEFAULT_VO else "^" + re.escape(vo.name) + ":"
    with database_errors():
        cursor = await db[ACCOUNT_USAGE].aggregate([
            {"$match": {"se": {"$in": sorted(ses)}, "account": {"$regex": pattern}}},
            {"$group": {"_id": "$se", "bytes": {"$sum": "$bytes"}}}])
        return {row["_id"]: int(row["bytes"]) for row in await cursor.to_list()}


async def room_in_vo(db: AsyncDatabase[Document], account: str, vo: str | None,
                     ses: Iterable[str]) -> dict[str, int | None]:
    """Bytes the account may still lock on each SE, cut to what its VO (None: DEFAULT_VO) may
    still lock there; every place that places locks (creation, evaluation, repair) asks this."""
    left = await room(db, account, ses)
    registered = (await registry(db)).get(vo or DEFAULT_VO)
    return left if registered is None else await within_vo_quota(db, registered, left)


async def reserve(db: AsyncDatabase[Document], account: str, deltas: Mapping[str, tuple[int, int]],
                  vo: str | None = None, *, noted: Noted | None = None) -> set[str]:
    """Charge `(files, bytes)` per SE to the account, on each SE where it has a quota only if its
    usage there stays within it; returns the SEs refused (nothing charged there). One read of the
    quotas, one write per SE with a quota (a usage record not made yet is made first), one bulk
    write for the others. Where its VO (None: DEFAULT_VO) has a quota, what all its accounts lock
    there is read after the charge, and the charge given back if they lock more than it (two
    calls at once may then both give back, and both wait for the next evaluation: never past).
    With `noted`, each SE's charge writes its note, and a give-back takes it off."""
    wanted = {se: delta for se, delta in deltas.items() if delta[0] or delta[1]}
    asked = dict(wanted)
    with database_errors():
        limits = {doc["se"]: int(doc["bytes"]) async for doc in read_by_ids(
            db[QUOTAS], [key(account, se) for se in wanted if wanted[se][1] > 0], {"se": 1, "bytes": 1})}
    refused: set[str] = set()
    for se in sorted(limits):
        files, size = wanted.pop(se)
        if size > limits[se]:  # never fits (and past the int64 range, a `$inc` cannot even be sent)
            refused.add(se)
            continue
        change = {**increment({"files": files, "bytes": size}),
                  "$set": {"account": account, "se": se, **(noted.fields(se) if noted else {})}}
        flt = {"_id": key(account, se), "bytes": {"$lte": limits[se] - size}}
        with database_errors():
            if (await db[ACCOUNT_USAGE].update_one(flt, change)).modified_count:
                continue
            made = await db[ACCOUNT_USAGE].update_one(  # the account's first lock on the SE?
                {"_id": key(account, se)}, {"$setOnInsert": {"account": account, "se": se, "files": 0, "bytes": 0}},
                upsert=True)
            if made.upserted_id is None or not (await db[ACCOUNT_USAGE].update_one(flt, change)).modified_count:
                refused.add(se)
    await charge(db, account, wanted, noted=noted)
    registered = (await registry(db)).get(vo or DEFAULT_VO)
    charged = [se for se in asked if se not in refused and asked[se][1] > 0]
    limits = _vo_limits(registered, charged) if registered else {}
    if registered and limits:
        used = await _vo_usage(db, registered, limits)
        past = {se for se, limit in limits.items() if used.get(se, 0) > limit}
        await charge(db, account, {se: (-asked[se][0], -asked[se][1]) for se in past},
                     settles=noted.token if noted else None)
        refused |= past
    return refused


async def charge(db: AsyncDatabase[Document], account: str, deltas: Mapping[str, tuple[int, int]], *,
                 noted: Noted | None = None, settles: str | None = None) -> None:
    """Add `(files, bytes)` per SE to the account's usage (negative to release): per SE one upsert
    that never passes the int64 range (see the module docstring), a `$inc` guarded against
    passing it. One whose guard misses hits the record's `_id` (DuplicateKey): that record is read
    and written as read (at the bound, marked, where the sum passes it), so no charge is lost or
    applied twice. Conflict if a record kept changing for WRITE_TRIES tries. (One write per SE: a
    bulk write whose upsert fails is answered by the embedded database in a form the driver
    cannot read.)

    With `noted`, the call's note on each SE is written in the same update. With `settles` (a
    call's token), each SE's change is applied with that note's removal, only where the note is
    still there (`rules.quota_notes`): a note someone else settled (or a rebuild dropped) changes
    nothing more, and a zero change still takes the note off."""
    for se, (files, size) in sorted(deltas.items()):
        if files or size or settles:
            await _charge_one(db, account, se, {"files": files, "bytes": size},
                              note=noted.fields(se) if noted else {}, settles=settles)


async def _charge_one(db: AsyncDatabase[Document], account: str, se: str, delta: Mapping[str, int], *,
                      note: Document, settles: str | None) -> None:
    doc: Document | None = {f: 0 for f in delta}  # not read: a guarded `$inc` whatever the counters
    read = any(bounded(value) != value for value in delta.values())
    if read:
        doc = await _usage_on(db, account, se, settles)  # a delta past the range: set from what is read
    noted = {note_field(settles): {"$exists": True}} if settles else {}
    for _ in range(WRITE_TRIES):
        if settles and read and (doc is None or settles not in (doc.get(NOTES) or {})):
            return  # settled already (or rebuilt away): nothing more to count
        guard, update = counter_write(doc, delta)
        if doc is not None and SATURATED in update.get("$set", {}):
            guard = {f: doc.get(f, {"$exists": False}) for f in COUNTERS}  # set from what was read
        update = {**update, "$set": {**update.get("$set", {}), "account": account, "se": se, **note}}
        if settles:
            update["$unset"] = {note_field(settles): ""}
        with contextlib.suppress(DuplicateKeyError):  # the record is there and missed the guard: read it
            with database_errors():
                result = await db[ACCOUNT_USAGE].update_one({"_id": key(account, se), **guard, **noted}, update,
                                                            upsert=not settles)
            if not settles or result.matched_count:
                return
        doc, read = await _usage_on(db, account, se, settles), True
    raise Conflict(f"the quota usage of {account} on {se} kept changing while this call was counted; try again")


async def _usage_on(db: AsyncDatabase[Document], account: str, se: str, settles: str | None = None
                    ) -> Document | None:
    """The record's counters (and the note of `settles`, when given)."""
    fields = {f: 1 for f in COUNTERS} | ({note_field(settles): 1} if settles else {})
    with database_errors():
        return await db[ACCOUNT_USAGE].find_one({"_id": key(account, se)}, fields)
