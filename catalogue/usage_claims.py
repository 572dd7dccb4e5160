"""Counts that a process killed between its record writes and its count cannot lose or double:
the calls' claims in `usage_claims` and their notes on the usage records.

A call that will change usage counters goes in three steps, as replica adds do
(`catalogue.usage_intents`), but for any usage records (a directory's as well as an SE's):
1. `intend`, before its record writes: claim its token in `usage_claims`, PENDING (since when)
   and listing the usage records it may change (KEYS), with what a successor needs to count for
   it, and note it on each of those records (NOTES `registering.<call>`, made where missing):
   two commands, sent together;
2. its record writes, which carry its token (a register call's `registered_in`, an overwrite's
   writer token: `catalogue.replica_writers`);
3. `settle`: per noted record one update adding what the writes took and taking the note away,
   guarded by the note's presence (whoever settles a note counts it; anyone after counts
   nothing); then the claim drops PENDING.
A call killed between 1 and 3 leaves its claim PENDING; the transfer workers' sweep takes the
claims PENDING longer than `usage_settle_after_s` (`stale`), counts for each from the records
carrying its token, and settles it as step 3 does: so a call that only stalled, and resumes
after the sweep, counts nothing. Which calls use it: registrations
(`catalogue.registration_counts`), overwrites (`catalogue.overwrite_counts`).

What is left, for `cairn usage rebuild`: a call stalled longer than the sweep's wait between its
notes and its writes, whose writes land after the sweep settled it (they stay uncounted); a
directory move carrying a noted record away before the call or the sweep settles (that record
misses the count); a call whose writes land after a rebuild settled it (a rebuild on a busy
installation). Orphan notes (a claim's insert failed, its notes landed) count nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.usage import COUNTING, KEYS, KIND, NOTES, PENDING, USAGE, USAGE_CLAIMS
from kernel.counters import SATURATED, bounded, counter_write
from kernel.db import INDEX_ORDER, Document, bulk_write_chunked, database_errors, read_by_ids
from kernel.errors import InvalidInput

STALE_S = 60.0  # a claim PENDING longer than this is its call's no more: it died, or stalled (docstring)
# A claim lists the usage records its call may change: a call whose directories' names pass this
# many bytes is refused before it writes anything (a claim must fit in one document, 16 MiB).
MAX_NOTED_BYTES = 4 << 20
STALE_BATCH = 1000  # claims a sweep reads at a time (the rest at its next turn)
SETTLE_ROUNDS = 5  # settles missing on a counter bound moved meanwhile, before the sweep's turn
Deltas = Mapping[str, Mapping[str, int]]  # increments by usage record `_id`


def check_noted(paths: Iterable[str]) -> None:
    """Refuse (400) a call whose usage records, one per directory in `paths`, would not fit in
    its claim (MAX_NOTED_BYTES of names): it is to be split."""
    names = list(paths)
    if (size := sum(len(p) + 8 for p in names)) > MAX_NOTED_BYTES:
        raise InvalidInput(f"this call reaches {len(names)} directories ({size} bytes of names, at most "
                           f"{MAX_NOTED_BYTES}): split it into smaller calls")


async def intend(db: AsyncDatabase[Document], call: str, keys: Sequence[str], *, kind: str | None = None,
                 counting: Any = None) -> None:
    """Step 1: claim `call` PENDING with its `keys` (of `kind`, None for a register call; with
    `counting`, what a successor counts it by), and note it on each of those records."""
    at = dt.datetime.now(dt.UTC)
    claim: Document = {"_id": call, PENDING: at, KEYS: list(keys)}
    if kind:
        claim.update({KIND: kind, COUNTING: counting})
    notes = [UpdateOne({"_id": key}, {"$set": {f"{NOTES}.{call}": at}}, upsert=True) for key in keys]
    with database_errors():
        await asyncio.gather(db[USAGE_CLAIMS].insert_one(claim), bulk_write_chunked(db[USAGE], notes))


async def settle(db: AsyncDatabase[Document], call: str, keys: Sequence[str], deltas: Deltas, *,
                 keep: bool = True) -> None:
    """Step 3: add `deltas` to the records `call` noted (`keys`), each once, guarded by the
    note's presence, taking the note away; then the claim drops PENDING (`keep`: a register
    call's stays, the sign it was counted) or goes. Records still noted after SETTLE_ROUNDS (a
    counter bound that kept moving) are left to the sweep."""
    pending = list(keys)
    projection = {"files": 1, "replicas": 1, "bytes": 1, SATURATED: 1, f"{NOTES}.{call}": 1}
    for round_ in range(SETTLE_ROUNDS):
        with database_errors():
            if not deltas or (round_ == 0 and _unread_will_do(deltas)):
                # Nothing to add (every file failed or was there already): only the notes go. Or a
                # first try unread: each `$inc` guarded against passing its bound does not need the
                # counters (`counter_write` of an unread record); one that misses (a counter near
                # the bound, a note settled by another) is read in the next round. One command less.
                noted: dict[str, Document] = {key: {} for key in pending}
            else:  # the counters as they are, for their bounds (`counter_write`)
                noted = {d["_id"]: d async for d in read_by_ids(db[USAGE], pending, projection)
                         if call in (d.get(NOTES) or {})}
            if not noted:
                break
            updates = [_settling(key, call, record, deltas.get(key, {})) for key, record in noted.items()]
            if (await bulk_write_chunked(db[USAGE], updates)).modified_count == len(updates) or not deltas:
                break
        pending = list(noted)  # a counter bound moved meanwhile, or another settled: read again
    else:
        return
    with database_errors():
        if keep:
            await db[USAGE_CLAIMS].update_one({"_id": call}, {"$unset": {PENDING: "", KEYS: ""}})
        else:
            await db[USAGE_CLAIMS].delete_one({"_id": call})


def _unread_will_do(deltas: Deltas) -> bool:
    """Whether every delta alone fits the int64 range, so that `counter_write` of an unread
    record makes a guarded `$inc` (a sum that may pass the range needs the counters read)."""
    return all(bounded(v) == v for delta in deltas.values() for v in delta.values())


def _settling(key: str, call: str, record: Document, delta: Mapping[str, int]) -> UpdateOne:
    guard, update = counter_write(record, delta) if delta else ({}, {})
    update.setdefault("$unset", {})[f"{NOTES}.{call}"] = ""
    return UpdateOne({"_id": key, f"{NOTES}.{call}": {"$exists": True}, **guard}, update)


async def stale(db: AsyncDatabase[Document], older_than_s: float, kind: str | None) -> list[Document]:
    """The claims of `kind` PENDING for longer than `older_than_s`, the oldest STALE_BATCH of
    every kind read from the index usage_claims_by_pending (under INDEX_ORDER: only PENDING
    claims carry its field, and a register call's settled claim stays for good)."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
    with database_errors():
        found = await db[USAGE_CLAIMS].find({PENDING: {"$lt": cutoff}}, comment=INDEX_ORDER
                                            ).sort(PENDING, 1).limit(STALE_BATCH).to_list()
    return [claim for claim in found if claim.get(KIND) == kind]
