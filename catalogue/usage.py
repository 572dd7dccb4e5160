"""Usage accounting: logical files and bytes per directory (recursive), physical replicas and
bytes per SE, kept current incrementally and recomputable by an admin rebuild.

Records live in one collection `usage`: `_id` `dir:<path>` with `files` and `bytes` (everything
below the path, the root `/` included), `_id` `se:<name>` with `replicas` and `bytes`. Every
register, file removal, replica add and replica remove collects its increments in a `Usage`
and applies them with one unordered bulk write of upserted `$inc`s (single-document `$inc` is
atomic; in commands of `kernel.db.write_chunk`), never by scanning. A file's ancestors are known from its path.

Replica adds and pulls (`catalogue.replica_pushes`, `catalogue.replica_pulls`) note themselves
on their SEs' records before writing the files and settle the note with their count
(`catalogue.usage_intents`); registrations, overwrites and file removals claim their count and
note it on every record they may change (`catalogue.usage_claims`): a process killed between
the two writes leaves its count to a successor, counted once. The rebuild keeps the notes of
calls it did not count and settles the claims of those it did, and of every overwrite and
removal, counting nothing more (what is left: `catalogue.usage_claims`).

Exactness: increments follow what the database reports as written. A file removal counts only
the records it marked as its own before deleting them (`catalogue.file_removal`), so two
removals of the same file racing each other take it off once; a replica added or removed by
several calls at once is counted by the call whose write took (`catalogue.replica_writers`).
The rebuild recomputes the counters from the records and reports the drift it corrected. Sizes
are what clients claim: a sum past the int64 range is stored at its bound, marked SATURATED
(`_counter_updates`), rather than refused by the database with every later write of that counter.

Partial writes and retries (the decision: counters are idempotent per file, by register call,
not recounted): every register call has a token, stored in the records it inserts
(`registered_in`), and claimed in `usage_claims` (unique `_id`) before it inserts, PENDING until
its count is settled, by itself or, if it died or stalled, by a successor
(`catalogue.registration_counts`). A call cut short by a database outage (answered 503 with some
records written) leaves its claim PENDING; its retry meets those records as existing files and,
after waiting a moment for it (`catalogue.registration_settling`), settles that call, counting
every record it kept; the transfer workers' sweep settles the others. A removal or move does
the same before it takes records off, so it only ever takes off what was counted. Records of
calls that never claimed (written before claims came first) are claimed and counted by whoever
meets them. The rebuild claims every token it has counted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson import Int64
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue.collection_names import FILES
from catalogue.lfn import ROOT, ancestors, check_lfn, is_within, parent_of
from catalogue.replica_writers import REPLICA_WRITERS
from kernel import lease
from kernel.counters import SATURATED, bounded, counter_write, saturated_record
from kernel.db import Document, IndexSpec, bulk_write_chunked, database_errors, increment, iterate, read_by_ids
from kernel.recount import set_if_unmoved

USAGE = "usage"
USAGE_CLAIMS = "usage_claims"
REGISTERED_IN = "registered_in"
# A file record's mark while one call removes or moves it (`catalogue.file_removal`,
# `catalogue.file_move`), and how long a mark holds (a dead call's lapses and is taken over).
REMOVING = "removing"
REMOVAL_LEASE = dt.timedelta(minutes=2)
# A directory record's mark while one call moves it (`catalogue.namespace.move`).
MOVING = "moving"
# A file record a registration wrote and gives up below a directory move: no move copies it
# (`catalogue.directory_moves.give_up_registered`).
WITHDRAWN = "withdrawn"
# An SE record's notes of replica adds and pulls not yet counted (`catalogue.usage_intents`).
INTENTS = "intents"
# A usage record's notes of calls not yet counted, and a call's claim's fields while it is not:
# since when, the records it noted, and what a successor counts it by; and a claim's kind (none:
# a register call's, kept as the sign it was counted) (`catalogue.usage_claims`).
NOTES = "registering"
PENDING = "pending"
KEYS = "keys"
COUNTING = "counting"
KIND = "kind"
# A directory move's claim (`catalogue.directory_move_plan`): a rebuild leaves it to the move.
DIRECTORY_MOVE = "directory_move"
# A record's bookkeeping fields, which no reader shows.
# A file move's copy: the token of the call that wrote it, until it is placed (`catalogue.move_counts`).
COPY_CALL = "move_call"
# The record a named move placed: its call's stamp (`catalogue.move_requests`).
MOVED_BY = "moved_by"
INTERNAL_FIELDS = ("_id", REGISTERED_IN, REMOVING, MOVING, REPLICA_WRITERS, "moving_guid", COPY_CALL, WITHDRAWN,
                   MOVED_BY)
# An SE record's tokens of replica removals counted but not yet complete (`count_removals`).
REMOVALS = "removals"
# An SE record's count of the times tokens left its REMOVALS (`removal_fences`).
FENCE = "removals_fence"
# The fields of a record that every write to it moves (a rebuild sets it only where they did not).
COUNTED = ("files", "replicas", "bytes", FENCE)

INDEXES = [
    # take_over_calls: files.find({registered_in: {$in: calls}})
    IndexSpec(FILES, [(REGISTERED_IN, 1)], name="files_by_registered_in", sparse=True),
    # usage_claims.stale and rebuild: usage_claims.find({pending: {$lt: cutoff}}); read under
    # INDEX_ORDER where the server is Cairn's FerretDB build (a register call's claim is kept for
    # good: the sweep, every 30 s in each worker, must not read them all)
    IndexSpec(USAGE_CLAIMS, [(PENDING, 1)], name="usage_claims_by_pending", sparse=True, index_order=True),
]


def directory_key(path: str) -> str:
    return f"dir:{path}"


def se_key(se: str) -> str:
    return f"se:{se}"


class Usage:
    """Increments collected during one call, applied at once."""

    def __init__(self) -> None:
        self.deltas: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        # files and bytes per parent directory, rolled up to every ancestor once per parent in
        # `apply` (a batch of 5000 files in 100 directories walks 100 paths, not 5000)
        self.per_parent: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def file(self, lfn: str, size: int, sign: int) -> None:
        """A file record appeared (+1) or went away (-1): every directory above it changes."""
        totals = self.per_parent[parent_of(lfn)] if lfn != ROOT else [0, 0]
        totals[0] += sign
        totals[1] += sign * size

    def replica(self, se: str, size: int, sign: int) -> None:
        """A replica on `se` appeared (+1) or went away (-1)."""
        delta = self.deltas[se_key(se)]
        delta["replicas"] += sign
        delta["bytes"] += sign * size

    def subtree(self, path: str, files: int, size: int, sign: int) -> None:
        """A whole directory's totals left (-1) or arrived (+1) at `path`: its ancestors change."""
        for directory in ancestors(path):
            delta = self.deltas[directory_key(directory)]
            delta["files"] += sign * files
            delta["bytes"] += sign * size

    def totals(self) -> dict[str, dict[str, int]]:
        """The non-zero increments collected, by usage record (each directory's rolled up from
        the files below it); collecting starts again."""
        for parent, (files, size) in self.per_parent.items():
            for directory in [*ancestors(parent), parent]:
                delta = self.deltas[directory_key(directory)]
                delta["files"] += files
                delta["bytes"] += size
        self.per_parent.clear()
        deltas = {key: {k: v for k, v in delta.items() if v} for key, delta in self.deltas.items()}
        self.deltas.clear()
        return {key: delta for key, delta in deltas.items() if delta}

    async def apply(self, db: AsyncDatabase[Document]) -> None:
        """Write every non-zero increment in one unordered bulk write (upserting new records):
        each counter document once, in commands of `kernel.db.write_chunk`."""
        if deltas := self.totals():
            await add_to_counters(db, deltas)


async def add_to_counters(db: AsyncDatabase[Document], deltas: Mapping[str, Mapping[str, int]]) -> None:
    """Add `deltas` (by usage record) to the counters: one read and one unordered bulk write."""
    with database_errors():
        await bulk_write_chunked(db[USAGE], await _counter_updates(db, deltas))


async def _counter_updates(db: AsyncDatabase[Document], deltas: Mapping[str, Mapping[str, int]]) -> list[UpdateOne]:
    """The updates adding `deltas` to their counter records, read first (one `_id $in`): an
    upserted `$inc` for a record not there yet, else a `$inc` guarded against passing the int64
    range, or, for a sum that would pass it (sizes no storage holds, as a client may claim them),
    the record set to the bound and marked SATURATED (`kernel.counters`). An overflowing `$inc` is refused by the
    database, which failed every later write of the counter (the root directory's: every
    registration of the installation, after its insert and before its change-feed events)."""
    found = {doc["_id"]: doc async for doc in read_by_ids(db[USAGE], deltas, {f: 1 for f in COUNTED})}
    updates = []
    for key, delta in deltas.items():
        doc = found.get(key)
        guard, update = counter_write(doc, delta)
        if "$set" in update or doc is None:  # saturated, or a record not there yet
            updates.append(UpdateOne({"_id": key}, update, upsert=True))
        else:  # a concurrent write taking it past the range meanwhile makes it miss (counted off: rebuild)
            updates.append(UpdateOne({"_id": key, **guard}, update))
    return updates


Removals = Mapping[str, Mapping[str, int]]  # {se: {removal token: bytes}}, one token per replica


def _removal_updates(removals: Removals, *, sign: int, fences: Mapping[str, int | None] | None = None
                     ) -> list[UpdateOne]:
    """Per SE, one update taking (sign -1) or giving back (+1) all its replicas at once, guarded
    by the tokens' absence (taking; and by the SE's fence as `fences` read it) or presence
    (giving back, which moves the fence: tokens leave) in the record's REMOVALS."""
    updates = []
    for se, tokens in removals.items():
        if not tokens:
            continue
        present = sign > 0
        guard: dict[str, Any] = {f"{REMOVALS}.{token}": {"$exists": present} for token in tokens}
        counters: dict[str, int] = {"replicas": sign * len(tokens),
                                    "bytes": sign * bounded(sum(tokens.values()))}
        if present:
            marks: dict[str, Any] = {"$unset": {f"{REMOVALS}.{t}": "" for t in tokens}}
            counters[FENCE] = 1
        else:
            marks = {"$set": {f"{REMOVALS}.{t}": 1 for t in tokens}}
            guard[FENCE] = (fences or {}).get(se)  # None: no token ever left (the field is missing)
        updates.append(UpdateOne({"_id": se_key(se), **guard}, {**increment(counters), **marks}))
    return updates


async def _apply_removals(db: AsyncDatabase[Document], removals: Removals, *, sign: int,
                          fences: Mapping[str, int | None] | None = None) -> None:
    updates = _removal_updates(removals, sign=sign, fences=fences)
    if not updates:
        return
    result = await bulk_write_chunked(db[USAGE], updates)
    if result.modified_count < len(updates):
        # Some token was taken already (a removal another process began), or a fence moved: one
        # by one, each guarded.
        singles = [u for se, tokens in removals.items() for token, size in tokens.items()
                   for u in _removal_updates({se: {token: size}}, sign=sign, fences=fences)]
        await bulk_write_chunked(db[USAGE], singles)


async def removal_fences(db: AsyncDatabase[Document], ses: Iterable[str]) -> dict[str, int | None]:
    """Each SE's removal fence: how many times tokens left its REMOVALS (None: never). A caller
    reads it before it reads the removal tokens it will count (`count_removals`)."""
    keys = {se_key(se): se for se in ses}
    with database_errors():
        docs = await db[USAGE].find({"_id": {"$in": list(keys)}}, {FENCE: 1}).to_list()
    found = {keys[d["_id"]]: d.get(FENCE) for d in docs}
    return {se: None if (value := found.get(se)) is None else int(value) for se in keys.values()}


async def count_removals(db: AsyncDatabase[Document], removals: Removals, fences: Mapping[str, int | None]) -> bool:
    """Take replicas being removed off their SEs' usage exactly once, whoever repeats the call:
    `removals` names each replica by its removal token (kept on the replica until it is gone,
    `catalogue.replica_removal`), as read after `fences` (`removal_fences`). One update per SE
    record for all its tokens, guarded by their absence from the record's REMOVALS and recording
    them there, and by the record's fence; only if some was recorded already (a removal cut
    short and taken over) or a fence moved are the tokens applied one by one.
    A token leaves REMOVALS only with its replica gone (`forget_removals`) or given back
    (`uncount_removals`), and either moves the fence: a count whose tokens were read before
    that is refused whenever it reaches the database, however long its process stalled. Returns
    False when some fence moved since `fences` (read them and the tokens again; what this call
    recorded stays recorded, and a token recorded is never counted again).
    Work run under a lease also stops here (`kernel.lease.LeaseLost`) if that lease may have run
    out: its successor has the work."""
    lease.check_held()
    await _apply_removals(db, removals, sign=-1, fences=fences)
    return await removal_fences(db, removals) == {se: fences.get(se) for se in removals}


async def uncount_removals(db: AsyncDatabase[Document], removals: Removals) -> None:
    """Give back what `count_removals` took for replicas that were not removed after all (changed
    meanwhile), each token once; their tokens leave, which moves the fence."""
    await _apply_removals(db, removals, sign=+1)


async def forget_removals(db: AsyncDatabase[Document], tokens: Mapping[str, Iterable[str]]) -> None:
    """Drop the tokens of removals that are complete (their replicas gone) from the SE records,
    moving each record's fence (`count_removals`): one update per SE."""
    updates = [UpdateOne({"_id": se_key(se)}, {"$unset": {f"{REMOVALS}.{t}": "" for t in names},
                                                **increment({FENCE: 1})})
               for se, names in tokens.items() if names]
    if updates:
        await bulk_write_chunked(db[USAGE], updates)


async def claim_calls(db: AsyncDatabase[Document], calls: Iterable[str]) -> set[str]:
    """The register calls whose counting this caller won: one unordered insert of their tokens
    into `usage_claims`, where a token that is there already is lost (unique `_id`)."""
    claims = [{"_id": call} for call in sorted(set(calls))]
    if not claims:
        return set()
    lost: set[int] = set()
    try:
        with database_errors():
            await db[USAGE_CLAIMS].insert_many(claims, ordered=False)
    except BulkWriteError as exc:
        lost = {e["index"] for e in exc.details.get("writeErrors", [])}
    return {c["_id"] for i, c in enumerate(claims) if i not in lost}


async def counted_calls(db: AsyncDatabase[Document], calls: Iterable[str]) -> set[str]:
    """Of register calls, those claimed and not PENDING: counted, by themselves, a retry or the
    sweep, and so settled (a call gives up its records before it settles). One `_id $in` read."""
    with database_errors():
        return {doc["_id"] async for doc in read_by_ids(db[USAGE_CLAIMS], sorted(set(calls)), {"_id": 1, PENDING: 1})
                if PENDING not in doc}


async def record_files(db: AsyncDatabase[Document], docs: Iterable[Mapping[str, Any]], sign: int) -> None:
    """Account file records that were written (+1) or deleted (-1), with their replicas. Before
    deleting records, call `take_over_calls` on them, so that what is taken off was counted."""
    usage = Usage()
    for doc in docs:
        usage.file(doc["_id"], int(doc.get("size", 0)), sign)
        for replica in doc.get("replicas", []):
            usage.replica(replica["se"], int(doc.get("size", 0)), sign)
    await usage.apply(db)


async def drop_directory_usage(db: AsyncDatabase[Document], path: str) -> None:
    """After a directory tree's files were removed (each taken off its ancestors and SEs as it
    went): drop the records of the tree's directories."""
    with database_errors():
        await db[USAGE].delete_many({"_id": {"$regex": "^" + re.escape(directory_key(path)) + "(/|$)"}})


async def directory_usage(db: AsyncDatabase[Document], path: str, leaving_out: Iterable[str] = ()) -> dict[str, Any]:
    """Files and bytes below `path` (recursive), less what is below those of the directories
    `leaving_out` nested in it (another VO's roots, for a caller confined to its VO, as
    `vo_usage` counts); zero for a path with nothing below it. One read of the records by `_id`."""
    check_lfn(path)
    nested = {d for d in leaving_out if d != path and is_within(d, path)}
    outermost = sorted(d for d in nested if not any(d != n and is_within(d, n) for n in nested))
    keys = [directory_key(p) for p in (path, *outermost)]
    with database_errors():
        docs = {d["_id"]: d for d in await db[USAGE].find({"_id": {"$in": keys}}).to_list()}
    counted = [docs.get(k, {}) for k in keys]
    return {"path": path, **{key: int(counted[0].get(key, 0)) - sum(int(c.get(key, 0)) for c in counted[1:])
                             for key in ("files", "bytes")}}


async def vo_usage(db: AsyncDatabase[Document], roots: Mapping[str, Sequence[str]]) -> dict[str, dict[str, int]]:
    """Files and bytes per VO, given each VO's namespace roots: below its roots, less what is below
    another VO's root nested in them (the VO `local` rooted at `/` holds every other VO's root)."""
    every = {root for vo_roots in roots.values() for root in vo_roots}
    counted = {root: await directory_usage(db, root) for root in sorted(every)}
    out: dict[str, dict[str, int]] = {}
    for vo, vo_roots in roots.items():
        own = set(vo_roots)
        nested = {r for r in every - own if any(is_within(r, o) for o in own)}
        outermost = {r for r in nested if not any(r != n and is_within(r, n) for n in nested)}
        out[vo] = {key: sum(counted[r][key] for r in own) - sum(counted[r][key] for r in outermost)
                   for key in ("files", "bytes")}
    return out


async def se_usage(db: AsyncDatabase[Document]) -> list[dict[str, Any]]:
    """Replicas and bytes on every SE that has held any."""
    with database_errors():
        docs = await db[USAGE].find({"_id": {"$regex": "^se:"}}).sort("_id", 1).to_list()
    return [{"se": d["_id"][3:], "replicas": int(d.get("replicas", 0)), "bytes": int(d.get("bytes", 0))}
            for d in docs]


async def se_bytes(db: AsyncDatabase[Document], se: str) -> int:
    """Bytes of the replicas on one SE, from its usage record (one read by `_id`)."""
    with database_errors():
        doc = await db[USAGE].find_one({"_id": se_key(se)}, {"bytes": 1})
    return int((doc or {}).get("bytes", 0))


async def recount(db: AsyncDatabase[Document]) -> tuple[dict[str, dict[str, int]], set[str]]:
    """Usage recomputed from the file records in one streamed pass over them (size, parent and
    replica SEs projected), summed per parent directory and per SE, then rolled up the tree in
    memory proportional to the number of directories; and the register calls named by the
    records it read. (An aggregation `$sum` of a field would save the transfer, but FerretDB 1.24
    sums field references to 0.)"""
    per_parent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_se: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    calls: set[str] = set()
    cursor = db[FILES].find({}, {"parent": 1, "size": 1, "replicas.se": 1, REGISTERED_IN: 1}).batch_size(5000)
    async for file in iterate(cursor):
        size = int(file.get("size", 0))
        totals = per_parent[file["parent"]]
        totals[0] += 1
        totals[1] += size
        for replica in file.get("replicas", []):
            per_se[replica["se"]][0] += 1
            per_se[replica["se"]][1] += size
        if call := file.get(REGISTERED_IN):
            calls.add(call)
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "bytes": 0})
    for parent, (files, size) in per_parent.items():
        for directory in [*ancestors(parent), parent] if parent != ROOT else [ROOT]:
            out[directory_key(directory)]["files"] += files
            out[directory_key(directory)]["bytes"] += size
    result = {k: dict(v) for k, v in out.items()}
    for se, (replicas, size) in per_se.items():
        result[se_key(se)] = {"replicas": replicas, "bytes": size}
    return result, calls


async def rebuild(db: AsyncDatabase[Document], *, fix: bool = True) -> dict[str, Any]:
    """Recount usage from the records, report each counter that drifted (stored vs. recounted),
    and with `fix` set each to its recount where it did not move meanwhile (`kernel.recount`: the
    records are read before the count, so an increment landing while the files are counted, for
    records behind the count's cursor, is never set back; such a record is reported `moved`, for
    another run), then claim the register calls whose records the count read (a retry or removal
    will not count them again). What is left: an increment stored just before the rebuild began
    for records written after the count passed them (milliseconds between a call's two writes)."""
    held = await stored_usage(db)
    return await apply_recount(db, held, *await recount(db), fix=fix)


async def _forget_pending(db: AsyncDatabase[Document], calls: set[str]) -> None:
    """Settle, counting nothing, the PENDING register calls among `calls` (a recount counted
    their records) and every other PENDING call (an overwrite: the recount read what it wrote,
    or it lands after and stays uncounted): their notes leave their records, and the claims of
    register calls say settled; the others go."""
    with database_errors():
        claims = await db[USAGE_CLAIMS].find({PENDING: {"$exists": True}}, {KEYS: 1, KIND: 1}
                                             ).to_list()  # usage_claims_by_pending
        claims = [c for c in claims if c.get(KIND) != DIRECTORY_MOVE]  # the route refuses a rebuild during one
        pending = {c["_id"]: c.get(KEYS) or [] for c in claims if c["_id"] in calls or c.get(KIND)}
        by_key: dict[str, list[str]] = defaultdict(list)
        for call, keys in pending.items():
            for key in keys:
                by_key[key].append(call)
        if by_key:
            await bulk_write_chunked(db[USAGE], [UpdateOne({"_id": key}, {"$unset": {f"{NOTES}.{c}": "" for c in cs}})
                                                 for key, cs in sorted(by_key.items())])
        if others := sorted(c["_id"] for c in claims if c.get(KIND)):
            await db[USAGE_CLAIMS].delete_many({"_id": {"$in": others}})
        if registers := sorted(set(pending) - set(others)):
            await db[USAGE_CLAIMS].update_many({"_id": {"$in": registers}},
                                               {"$unset": {PENDING: "", KEYS: "", COUNTING: ""}})


async def stored_usage(db: AsyncDatabase[Document]) -> dict[str, Document]:
    """Every usage record as it is now, by `_id` (without it)."""
    with database_errors():
        return {d.pop("_id"): d for d in await db[USAGE].find({}).to_list()}


async def apply_recount(db: AsyncDatabase[Document], stored: dict[str, Document], truth: dict[str, dict[str, int]],
                        calls: set[str], *, fix: bool) -> dict[str, Any]:
    """`rebuild` once the records (`stored`, read first) and the files (`truth`, `calls`) were read."""
    drift: dict[str, Any] = {}
    moved: list[str] = []
    for key in sorted(set(truth) | set(stored)):
        want, was = truth.get(key, {}), stored.get(key)
        have = {k: int(v) for k, v in (was or {}).items() if k not in (REMOVALS, FENCE, SATURATED, INTENTS, NOTES)}
        record = saturated_record(want)
        if uncounted := {c: at for c, at in ((was or {}).get(NOTES) or {}).items() if c not in calls}:
            record[NOTES] = uncounted  # calls the count did not see: they settle here still
        saturated = SATURATED in record
        if bool((was or {}).get(SATURATED)) == saturated and all(
                bounded(want.get(f, 0)) == have.get(f, 0) for f in set(want) | set(have)):
            continue
        drift[key] = {"stored": have, "recounted": want}
        if key.startswith(se_key("")):  # its tokens go: move its fence (`count_removals`)
            record[FENCE] = Int64(int((was or {}).get(FENCE) or 0) + 1)
        if fix and not await set_if_unmoved(db[USAGE], key, was, record if want else None, fields=COUNTED,
                                            replace=True):
            moved.append(key)
    if fix:  # the count included these calls' records: nobody is to count them again
        await claim_calls(db, calls)
        await _forget_pending(db, calls)
    return {"checked": len(set(truth) | set(stored)), "drifted": len(drift), "fixed": fix, "moved": moved,
            "drift": drift}
