"""Replica counts that a crash between two writes cannot lose or double: every replica add and
pull writes, in the same update of the file record, an entry saying what its SEs' usage owes
(`usage_entries`: token, SE, replicas ±1, bytes, time); the counters follow from the entries.

The protocol (`settle`), a few bulk writes per batch whoever runs it:
1. read the SE records (their fences, below) before the entries are written or read;
2. apply: per SE record one update adding the entries and recording their tokens (`applied`),
   guarded by the tokens' absence and by the fences as read;
3. clear the entries off their files (an exact `$pullAll`; where a file was moved or removed
   meanwhile, looked for by token);
4. forget the tokens from the SE records, which moves a fence.
The writer runs it right after its write. A writer killed anywhere leaves entries on the files,
and `settle_stale` (run by the transfer workers' sweep) finishes them: an entry is applied once
by its token. So that the sweep need not look through every file record for them (a scan of the
collection on the embedded database), a call that writes entries first notes itself in
USAGE_PENDING (`begin`, one insert; its entries name it) and takes the note away once it has
settled (`settle`, one delete): the sweep reads the notes older than STALE_S, a small collection,
and looks for entries only by the calls they name. A call that died before writing any entry
leaves a note with none, dropped after ORPHAN_S (a writer stalled that long between its note and
its write, then killed before settling, leaves its entries to the rebuild).
A writer that only stalled and resumes after a successor forgot its tokens is refused by the
successors' fence (`takeover_fence`), moved by every successor's forget and
by a rebuild; a successor is refused by either fence (writers' forgets move `writer_fence`). So a
writer's count is refused only after a takeover, not by another batch on the same SE. A refused
count reads the fences, then the entries still on the files, and applies those not applied.
The rebuild reckons the entries still on the files (`usage.rebuild`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson import Int64
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.usage import APPLIED, TAKEOVER_FENCE, USAGE, USAGE_ENTRIES, USAGE_PENDING, WRITER_FENCE, se_key
from kernel.counters import SATURATED, counter_write
from kernel.db import Document, bulk_write_chunked, database_errors, increment, read_by_ids

ATTEMPTS = 20  # counts refused by a moved fence before a settling gives up (the sweep finishes it)
STALE_S = 2.0  # entries older than this are a successor's (their writer died or stalled)
ORPHAN_S = 600.0  # a call's note without entries older than this is dropped (its writer died before writing)
SWEEP_LIMIT = 200  # calls a sweep settles at a time
Entries = Mapping[str, Sequence[Document]]  # {lfn: [entry, ...]}
Records = dict[str, Document]  # SE usage records by SE name, as read


def _now() -> dt.datetime:
    at = dt.datetime.now(dt.UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored (BSON keeps milliseconds)


async def begin(db: AsyncDatabase[Document]) -> str:
    """Note a call about to write entries (USAGE_PENDING, for the sweep); returns its token,
    which its entries carry (`entry`)."""
    call = uuid.uuid4().hex
    with database_errors():
        await db[USAGE_PENDING].insert_one({"_id": call, "at": _now()})
    return call


def entry(call: str, se: str, sign: int, size: int) -> Document:
    """What a replica add (+1) or pull (-1) on `se` of a file of `size`, by the call `call`
    (`begin`), owes the SE's usage; the time is cut to milliseconds as stored, so the entry is
    cleared by its exact value."""
    return {"t": uuid.uuid4().hex, "c": call, "se": se, "n": sign, "b": sign * size, "at": _now()}


async def read_records(db: AsyncDatabase[Document], ses: Iterable[str]) -> Records:
    """The SE records (counters, fences, applied tokens) there are. A writer reads them before it
    writes its entries, a successor before it reads them; one missing then has no fence yet."""
    keys = {se_key(se): se for se in ses}
    if not keys:
        return {}
    fields = {"replicas": 1, "bytes": 1, SATURATED: 1, APPLIED: 1, WRITER_FENCE: 1, TAKEOVER_FENCE: 1}
    with database_errors():
        return {keys[d["_id"]]: d async for d in read_by_ids(db[USAGE], keys, fields)}


def _fences(record: Document, successor: bool) -> Document:
    guard = {TAKEOVER_FENCE: record.get(TAKEOVER_FENCE)}  # None: never moved (the field is missing)
    if successor:
        guard[WRITER_FENCE] = record.get(WRITER_FENCE)
    return guard


def _by_se(entries: Entries) -> dict[str, dict[str, Document]]:
    out: dict[str, dict[str, Document]] = defaultdict(dict)
    for found in entries.values():
        for e in found:
            out[e["se"]][e["t"]] = e
    return out


async def _apply(db: AsyncDatabase[Document], records: Records, entries: Entries, successor: bool) -> bool:
    """Step 2 for the entries not applied yet as `records` show; True when none is left."""
    updates = []
    for se, tokens in _by_se(entries).items():
        record = records.get(se) or {}
        todo = {t: e for t, e in tokens.items() if t not in (record.get(APPLIED) or {})}
        if not todo:
            continue
        guard, update = counter_write(record, {"replicas": sum(e["n"] for e in todo.values()),
                                               "bytes": sum(e["b"] for e in todo.values())})
        guard.update({f"{APPLIED}.{t}": {"$exists": False} for t in todo})
        update.setdefault("$set", {}).update({f"{APPLIED}.{t}": 1 for t in todo})
        updates.append(UpdateOne({"_id": se_key(se), **_fences(record, successor), **guard}, update))
    if not updates:
        return True
    if missing := {se for se in _by_se(entries) if se not in records}:  # the SE's first replica: its record
        await bulk_write_chunked(db[USAGE], [UpdateOne({"_id": se_key(se)}, {"$setOnInsert": {
            "replicas": Int64(0), "bytes": Int64(0)}}, upsert=True) for se in sorted(missing)])
    result = await bulk_write_chunked(db[USAGE], updates)
    return result.modified_count == len(updates)


async def _find(db: AsyncDatabase[Document], entries: Entries) -> dict[str, list[Document]]:
    """The entries among `entries` still on a file, wherever the file is now: at their LFN, or
    (moved or removed meanwhile: rare) looked for by token (index files_by_usage_entry_token)."""
    tokens = {e["t"] for found in entries.values() for e in found}
    out: dict[str, list[Document]] = {}
    async for doc in read_by_ids(db[FILES], entries, {USAGE_ENTRIES: 1}):
        if mine := [e for e in doc.get(USAGE_ENTRIES) or [] if e["t"] in tokens]:
            out[doc["_id"]] = mine
    if missing := tokens - {e["t"] for found in out.values() for e in found}:
        with database_errors():
            async for doc in db[FILES].find({f"{USAGE_ENTRIES}.t": {"$in": sorted(missing)}}, {USAGE_ENTRIES: 1}):
                out[doc["_id"]] = [e for e in doc.get(USAGE_ENTRIES) or [] if e["t"] in missing]
    return out


async def _clear(db: AsyncDatabase[Document], entries: Entries) -> None:
    """Step 3: the entries off their files (all copies: a move may have copied a file). Each
    clearing moves its file's version: a directory move that copied the file with the entries
    meanwhile copies it again rather than drop the original (`catalogue.moves`), so no copy
    keeps an entry that is no longer owed."""
    values = [e for found in entries.values() for e in found]
    update = {"$pullAll": {USAGE_ENTRIES: values}, **increment({"version": 1})}
    with database_errors():
        result = await db[FILES].update_many({"_id": {"$in": list(entries)}, f"{USAGE_ENTRIES}.t": {"$in": [
            e["t"] for e in values]}}, update)
    # Fewer modified: some cleared by another, or the file moved or went.
    if result.modified_count < len(entries) and (left := await _find(db, entries)):
        with database_errors():
            await db[FILES].update_many({"_id": {"$in": list(left)}}, update)


async def _forget(db: AsyncDatabase[Document], entries: Entries, successor: bool) -> None:
    """Step 4: the tokens off the SE records, moving the fence of the writer's kind."""
    fence = TAKEOVER_FENCE if successor else WRITER_FENCE
    updates = [UpdateOne({"_id": se_key(se)}, {"$unset": {f"{APPLIED}.{t}": "" for t in tokens},
                                                 **increment({fence: 1})})
               for se, tokens in _by_se(entries).items()]
    if updates:
        await bulk_write_chunked(db[USAGE], updates)


async def settle(db: AsyncDatabase[Document], records: Records, entries: Entries, *, calls: Iterable[str] = (),
                 successor: bool = False) -> bool:
    """Apply, clear and forget `entries` ({lfn: [entry]}), written or read after `records`
    (`read_records`, of every SE they name) were read: the module docstring's steps 2-4; then
    take away the notes of `calls` (`begin`), whose entries these are. A `successor` settles
    entries another call wrote. Returns False when fences kept moving (ATTEMPTS times): the
    entries and notes stay, for the sweep."""
    entries = {lfn: list(found) for lfn, found in entries.items() if found}
    pending: Entries = entries
    for attempt in range(ATTEMPTS if entries else 0):
        if await _apply(db, records, pending, successor):
            break
        await asyncio.sleep(random.uniform(0, 0.01 * attempt))
        records = await read_records(db, _by_se(entries))  # before the entries: a fence, then what it guards
        pending = await _find(db, entries)
    else:
        if entries:
            return False
    if entries:
        await _clear(db, entries)
        await _forget(db, entries, successor)
    if calls := sorted(set(calls)):
        with database_errors():
            await db[USAGE_PENDING].delete_many({"_id": {"$in": calls}})
    return True


async def _entries_of(db: AsyncDatabase[Document], calls: Iterable[str]) -> dict[str, list[Document]]:
    """The entries of `calls` still on files (index files_by_usage_entry_call; on the embedded
    database a scan, run only when some call's note is stale)."""
    wanted = sorted(set(calls))
    with database_errors():
        docs = await db[FILES].find({f"{USAGE_ENTRIES}.c": {"$in": wanted}}, {USAGE_ENTRIES: 1}).to_list()
    return {d["_id"]: mine for d in docs if (mine := [e for e in d.get(USAGE_ENTRIES) or [] if e.get("c") in wanted])}


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = STALE_S) -> int:
    """Finish the counts of calls that died (or stalled) between their file write and their
    count: settle, as a successor, the entries of the calls noted more than `older_than_s` ago
    (USAGE_PENDING: one small read when none is), SWEEP_LIMIT calls at a time; drop the notes of
    calls that wrote no entry within ORPHAN_S. Returns the entries settled."""
    settled = 0
    while True:
        at = dt.datetime.now(dt.UTC)
        with database_errors():
            notes = await db[USAGE_PENDING].find({"at": {"$lt": at - dt.timedelta(seconds=older_than_s)}}
                                                  ).sort("at", 1).limit(SWEEP_LIMIT).to_list()
        if not notes:
            return settled
        calls = {n["_id"]: n["at"] for n in notes}
        # The SEs the entries name, their records, then the entries as they are after the records.
        records = await read_records(db, {e["se"] for found in (await _entries_of(db, calls)).values() for e in found})
        entries = await _entries_of(db, calls)
        written = {e["c"] for found in entries.values() for e in found}
        cutoff = at - dt.timedelta(seconds=ORPHAN_S)
        ended = [c for c, noted in calls.items() if c in written or _aware(noted) < cutoff]
        if not await settle(db, records, entries, calls=ended, successor=True):
            return settled
        settled += sum(len(found) for found in entries.values())
        if len(notes) < SWEEP_LIMIT or not ended:
            return settled


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)  # as a client without tz_aware reads it


def owed(entries: Iterable[Document], applied: Mapping[str, Mapping[str, Any]]) -> dict[str, list[int]]:
    """Per SE, the replicas and bytes that `entries` (found on the files) still owe its record,
    whose applied tokens are `applied` (by SE): for a rebuild's comparison."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in entries:
        if e["t"] not in applied.get(e["se"], {}):
            out[e["se"]][0] += e["n"]
            out[e["se"]][1] += e["b"]
    return out
