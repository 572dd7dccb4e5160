"""Register calls' counts that a process killed between two writes cannot lose or double.

A register call (`catalogue.files.register_files`) inserts its file records, then adds them to
the usage counters of every directory above them and of their replicas' SEs: a server killed
in between left those counters short for good. Each call now goes in three steps, as replica
adds do (`catalogue.usage_intents`):
1. intend, before the insert: claim the call's token in `usage_claims`, PENDING (since when)
   and listing the usage records it may change (KEYS), and note it on each of those records
   (NOTES `registering.<call>`, the record made where missing): two commands, sent together;
2. the insert, each record carrying the token (`registered_in`), and the records given up;
3. settle: per usage record one update adding what the call kept and taking the note away,
   guarded by the note's presence (whoever settles a note counts it; anyone after counts
   nothing); then the claim drops PENDING: the call is counted (`usage.counted_calls`).
A call killed between 1 and 3 leaves its claim PENDING. `settle_stale` (the transfer workers'
sweep) takes the claims PENDING longer than STALE_S, counts each call's records by their token
(index files_by_registered_in) and settles them as step 3 does: so a call that only stalled,
and resumes after the sweep, counts nothing. A removal, a move or a retry meeting a PENDING
call's records settles it so first (`take_over_calls`), after `registration_settling` waited a
moment for the call itself. Cost: two more commands per call (the notes, the claim settled).

What is left, for `cairn usage rebuild`: a call stalled longer than STALE_S between its notes
and its insert, whose records land after a sweep settled it (they stay uncounted). A rebuild
counts the records it reads: it settles the PENDING calls it counted, counting nothing more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.lfn import ancestors
from catalogue.usage import (
    KEYS,
    NOTES,
    PENDING,
    REGISTERED_IN,
    USAGE,
    USAGE_CLAIMS,
    WITHDRAWN,
    Usage,
    claim_calls,
    directory_key,
    se_key,
)
from kernel.counters import SATURATED, counter_write
from kernel.db import Document, bulk_write_chunked, database_errors, iterate, read_by_ids

STALE_S = 60.0  # a claim PENDING longer than this is its call's no more: it died, or stalled (docstring)
SETTLE_ROUNDS = 5  # settles missing on a counter bound moved meanwhile, before the sweep's turn
Deltas = Mapping[str, Mapping[str, int]]  # increments by usage record `_id`


def noted_keys(lfns: Iterable[str], ses: Iterable[str]) -> list[str]:
    """The usage records a call registering `lfns` with replicas on `ses` may change."""
    return sorted({directory_key(d) for lfn in lfns for d in ancestors(lfn)} | {se_key(se) for se in ses})


async def intend(db: AsyncDatabase[Document], call: str, keys: Sequence[str]) -> None:
    """Step 1: claim `call` PENDING with its `keys`, and note it on each of those records."""
    at = dt.datetime.now(dt.UTC)
    notes = [UpdateOne({"_id": key}, {"$set": {f"{NOTES}.{call}": at}}, upsert=True) for key in keys]
    with database_errors():
        await asyncio.gather(db[USAGE_CLAIMS].insert_one({"_id": call, PENDING: at, KEYS: list(keys)}),
                             bulk_write_chunked(db[USAGE], notes))


def registered_totals(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """What file records registered (with the replicas given) add to the usage records."""
    usage = Usage()
    for doc in docs:
        size = int(doc.get("size", 0))
        usage.file(doc["_id"], size, +1)
        for replica in doc.get("replicas", []):
            usage.replica(replica["se"], size, +1)
    return usage.totals()


async def settle(db: AsyncDatabase[Document], call: str, keys: Sequence[str], deltas: Deltas) -> None:
    """Step 3: add `deltas` to the records `call` noted (`keys`), each once, guarded by the
    note's presence, taking the note away; then the claim drops PENDING. Records still noted
    after SETTLE_ROUNDS (a counter bound that kept moving) are left to the sweep."""
    pending = list(keys)
    projection = {"files": 1, "replicas": 1, "bytes": 1, SATURATED: 1, f"{NOTES}.{call}": 1}
    for _ in range(SETTLE_ROUNDS):
        with database_errors():
            if deltas:  # the counters as they are, for their bounds (`counter_write`)
                noted = {d["_id"]: d async for d in read_by_ids(db[USAGE], pending, projection)
                         if call in (d.get(NOTES) or {})}
            else:  # nothing to add (every file failed or was there already): only the notes go
                noted = {key: {} for key in pending}
            if not noted:
                break
            updates = [_settling(key, call, record, deltas.get(key, {})) for key, record in noted.items()]
            if (await bulk_write_chunked(db[USAGE], updates)).modified_count == len(updates) or not deltas:
                break
        pending = list(noted)  # a counter bound moved meanwhile, or another settled: read again
    else:
        return
    with database_errors():
        await db[USAGE_CLAIMS].update_one({"_id": call}, {"$unset": {PENDING: "", KEYS: ""}})


def _settling(key: str, call: str, record: Document, delta: Mapping[str, int]) -> UpdateOne:
    guard, update = counter_write(record, delta) if delta else ({}, {})
    update.setdefault("$unset", {})[f"{NOTES}.{call}"] = ""
    return UpdateOne({"_id": key, f"{NOTES}.{call}": {"$exists": True}, **guard}, update)


async def settle_pending(db: AsyncDatabase[Document], call: str, keys: Sequence[str]) -> None:
    """Settle a PENDING call for it: count the records it inserted and did not withdraw, with
    their first replicas, as they are now (index files_by_registered_in)."""
    await settle(db, call, keys, (await _kept_by(db, [call])).totals())


async def _kept_by(db: AsyncDatabase[Document], calls: Sequence[str]) -> Usage:
    """What the records `calls` inserted and did not withdraw add, with their first replicas."""
    usage = Usage()
    # Not the records a call withdrew (`directory_moves.give_up_registered`): it deletes them uncounted,
    # after waiting (up to PASS_WAIT) for a move, longer than a registration waits for it to settle.
    cursor = db[FILES].find({REGISTERED_IN: {"$in": sorted(calls)}, WITHDRAWN: {"$exists": False}},
                            {"size": 1, "created": 1, "replicas.se": 1, "replicas.created": 1})
    async for doc in iterate(cursor.batch_size(5000)):
        usage.file(doc["_id"], int(doc.get("size", 0)), +1)
        for replica in _first_replicas(doc):
            usage.replica(replica["se"], int(doc.get("size", 0)), +1)
    return usage


def _first_replicas(doc: Document) -> list[Document]:
    """The replicas a file was registered with (made just before the record, so not later)."""
    created = doc.get("created")
    return [r for r in doc.get("replicas", []) if created is None or r.get("created", created) <= created]


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = STALE_S) -> int:
    """Finish the counts of register calls that died (or stalled) between their intent and their
    count: the claims PENDING for longer than `older_than_s` (index usage_claims_by_pending),
    each settled from its records. Returns the calls settled."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
    with database_errors():
        stale = await db[USAGE_CLAIMS].find({PENDING: {"$lt": cutoff}}, {KEYS: 1}).sort("_id", 1).to_list()
    for claim in stale:
        await settle_pending(db, claim["_id"], claim.get(KEYS) or [])
    return len(stale)


async def take_over_calls(db: AsyncDatabase[Document], docs: Iterable[Document]) -> None:
    """Make sure the register calls named by `docs` (read with REGISTERED_IN) are counted before
    their records change: settle each PENDING one (`settle_pending`), and claim and count each
    that never claimed (records written before calls claimed first, or by a rebuild's claims
    missing). One `_id $in` read when all are counted."""
    calls = sorted({str(d[REGISTERED_IN]) for d in docs if d.get(REGISTERED_IN)})
    if not calls:
        return
    with database_errors():
        claims = {c["_id"]: c async for c in read_by_ids(db[USAGE_CLAIMS], calls, {PENDING: 1, KEYS: 1})}
    for call, claim in sorted(claims.items()):
        if PENDING in claim:
            await settle_pending(db, call, claim.get(KEYS) or [])
    if won := await claim_calls(db, [call for call in calls if call not in claims]):
        await (await _kept_by(db, sorted(won))).apply(db)
