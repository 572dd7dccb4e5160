"""Replica counts that a process killed between two writes cannot lose or double.

A replica add (`catalogue.replica_pushes`) or pull (`catalogue.replica_pulls`) writes the file
records, then its SEs' usage records: a process killed in between left the counters off for
good (the chaos test found an SE one replica short). Each such call now goes in three steps:
1. intend: every SE record the call may change notes it under INTENTS (`intents.<call>`: the
   time, the sign, the LFNs it may write), in the same command that reads the record's counters
   (one `find_one_and_update` for one SE, the common case; else one update and one read);
2. the file writes, which carry the call's token already (`catalogue.replica_writers`: the
   replica's `add` or `remove` writer on that SE);
3. settle: per SE record one update adding what the writes took and taking the note away,
   guarded by the note's presence: whoever settles a note counts it; anyone after counts nothing.
A call killed between 1 and 3 leaves its note. `settle_stale` (the transfer workers' sweep,
which reads only the SE records) takes the notes older than STALE_S, reads the LFNs they name by
`_id`, counts the replicas whose writer token on that SE is the call's, and settles the note
with the same guard: so a call that only stalled, and resumes after the sweep, counts nothing.
The old way cost a counter read and a write; this costs the same for one SE.

What is left, for `cairn usage rebuild`: a call stalled longer than STALE_S between its note and
its file write whose write lands after a sweep settled the note (its replicas uncounted); a
file a directory move carried away, or whose token another call replaced, between a killed
call's write and the sweep. A rebuild that sets a record drops its notes (what the recount read
is counted; a call settling after it counts nothing more).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.replica_writers import ADDED, REMOVED, REPLICA_WRITERS, written_by
from catalogue.usage import INTENTS, USAGE, se_key
from kernel.counters import SATURATED, counter_write
from kernel.db import ID_ORDER, Document, bulk_write_chunked, database_errors, read_by_ids
from kernel.documents import aware

STALE_S = 60.0  # a note older than this is its call's no more: it died, or stalled (module docstring)
SETTLE_ROUNDS = 5  # settles missing on a counter bound moved meanwhile, before the sweep's turn
COUNTERS = {"replicas": 1, "bytes": 1, SATURATED: 1}
Records = dict[str, Document]  # SE usage records (counters) by SE name, as read


async def intend(db: AsyncDatabase[Document], call: str, sign: int, targets: Iterable[tuple[str, str]]) -> Records:
    """Step 1: note `call` (adding, sign +1, or pulling, -1, the replicas `(lfn, se)`) on each
    SE's record, made where missing; returns the records' counters as they are with the note on."""
    at = dt.datetime.now(dt.UTC)
    lfns_by_se: dict[str, set[str]] = {}
    for lfn, se in targets:
        lfns_by_se.setdefault(se, set()).add(lfn)
    notes = {se: {"at": at, "sign": sign, "lfns": sorted(lfns)} for se, lfns in lfns_by_se.items()}
    if not notes:
        return {}
    updates = {se: {"$set": {f"{INTENTS}.{call}": note}} for se, note in notes.items()}
    with database_errors():
        if len(notes) == 1:
            (se, update), = updates.items()
            # (no projection: FerretDB 1.24 has none in findAndModify; the record is small)
            doc = await db[USAGE].find_one_and_update({"_id": se_key(se)}, update, upsert=True,
                                                      return_document=ReturnDocument.AFTER)
            return {se: {k: v for k, v in (doc or {}).items() if k in COUNTERS}}
        await bulk_write_chunked(db[USAGE], [UpdateOne({"_id": se_key(se)}, update, upsert=True)
                                             for se, update in updates.items()])
        keys = {se_key(se): se for se in notes}
        return {keys[d["_id"]]: d async for d in read_by_ids(db[USAGE], keys, COUNTERS)}


def tally(counts: dict[str, list[int]], se: str, sign: int, size: int) -> None:
    """Add one replica added (+1) or pulled (-1) on `se` to a call's `counts` for `settle`."""
    count = counts.setdefault(se, [0, 0])
    count[0] += sign
    count[1] += sign * size


async def settle(db: AsyncDatabase[Document], call: str, records: Records, counts: Mapping[str, Sequence[int]]
                 ) -> None:
    """Step 3: add `counts` ({se: (replicas, bytes)}, what the call's writes took) to the SE
    records noted by `call` (`records`, as `intend` read them; every SE noted, counted or not),
    taking the note away: each record once, guarded by the note's presence."""
    pending = dict(records)
    for _ in range(SETTLE_ROUNDS):
        updates = [_settling(se, call, record, counts.get(se, (0, 0))) for se, record in pending.items()]
        if not updates:
            return
        with database_errors():
            result = await bulk_write_chunked(db[USAGE], updates)
        if result.modified_count == len(updates):
            return
        # A counter bound moved meanwhile (another call's count), or the note was settled by the
        # sweep or dropped by a rebuild: read again; a record without the note is done.
        keys = {se_key(se): se for se in pending}
        with database_errors():
            found = {keys[d["_id"]]: d async for d in read_by_ids(db[USAGE], keys, {**COUNTERS, INTENTS: 1})}
        pending = {se: doc for se, doc in found.items() if call in (doc.get(INTENTS) or {})}


def _settling(se: str, call: str, record: Document, count: Sequence[int]) -> UpdateOne:
    replicas, size = count
    guard, update = counter_write(record, {"replicas": replicas, "bytes": size}) if replicas else ({}, {})
    update.setdefault("$unset", {})[f"{INTENTS}.{call}"] = ""
    return UpdateOne({"_id": se_key(se), f"{INTENTS}.{call}": {"$exists": True}, **guard}, update)


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = STALE_S) -> int:
    """Finish the counts of calls that died (or stalled) between their file writes and their
    count: the notes older than `older_than_s` on the SE records (one read of the `se:` records,
    an `_id` range), each counted from its LFNs' records as they are (one `_id` read) and
    settled as `settle` does. Returns the notes settled."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
    with database_errors():
        records = await db[USAGE].find({"_id": {"$gte": se_key(""), "$lt": "se;"}}, {**COUNTERS, INTENTS: 1},
                                       comment=ID_ORDER).sort("_id", 1).to_list()
    settled = 0
    for record in records:
        se = record["_id"][len(se_key("")):]
        for call, note in sorted((record.get(INTENTS) or {}).items()):
            if aware(note["at"]) >= cutoff:
                continue
            count = await _counted(db, se, call, note)
            await settle(db, call, {se: record}, {se: count})
            settled += 1
    return settled


async def _counted(db: AsyncDatabase[Document], se: str, call: str, note: Mapping[str, Any]) -> tuple[int, int]:
    """What a noted call's writes took on `se`, from its LFNs' records: the replicas whose add
    (or remove) writer on that SE is the call's."""
    sign = int(note["sign"])
    op = ADDED if sign > 0 else REMOVED
    replicas = size = 0
    async for doc in read_by_ids(db[FILES], note.get("lfns") or [], {"size": 1, REPLICA_WRITERS: 1}):
        if written_by(doc, se, op, call):
            replicas += sign
            size += sign * int(doc.get("size", 0))
    return replicas, size
