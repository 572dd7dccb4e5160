"""A moved file's bytes stay where they were written: its replicas keep their storage path.

A move renames a file in the catalogue only; on every SE its bytes stay at the URL derived from
the LFN they were written under. So each replica of a moved file keeps that LFN as `path_lfn`
(set by the server on the move, never taken from a client, dropped when the file moves back), and
everything that reads, copies from, stages, checks or deletes the replica derives its URLs from
`catalogue.storage_paths.storage_lfn` (the path), not from the file's LFN.

The old path stays taken: a new file registered at the old LFN derives the same URL on that SE,
and a write there would overwrite the moved file's bytes. So a move records each such path as
held (`moved_paths`: one record per SE and path, with the holder's GUID) *before* the original
record leaves the old LFN. A new replica at a held path is refused (409, `HELD`): pushed on an
existing file, before the push (a file can only exist at the old LFN once the original left,
so after the record was written); registered with a new file, after its insert, for the same
reason (`catalogue.files` gives such files up, uncounted). A holder moved back to its path may
add a replica there again (its GUID). The record goes when the reaper has deleted the bytes at
that path (`release`), or when it is found with no replica of its holder left at the path (the
replica left the catalogue otherwise: its bytes are dark data, found and cleaned by an audit).

A deletion holds the paths whose bytes it is about to delete the same way (`hold_for_deletion`,
for at most DELETION_HOLD_S), before it reads its replicas' records one last time: the holder
may be forced out of the catalogue and a new file registered at its LFN meanwhile, whose bytes
the deletion would delete. Either the new file's replica was written before the hold (the
deletion's last read then finds the new file and leaves the path alone), or it finds the hold
and is refused (`BEING_DELETED`) until the deletion ends it (`end_deletion`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue.collection_names import FILES
from catalogue.directories import DUPLICATE_KEY, insert_ignoring_duplicates, now
from catalogue.storage_paths import PATH_LFN, storage_lfn
from kernel.db import READ_SLICE, Document, IndexSpec, database_errors, find_by_values, read_by_ids
from kernel.marks import by_ids

MOVED_PATHS = "moved_paths"
HELD = "the SE's path for this LFN holds the bytes of another file that was moved; choose another LFN or SE"
BEING_DELETED = ("the SE's path for this LFN holds the bytes of an earlier file at it, which a deletion is removing "
                 "now; try again in a few minutes")
# How long a deletion's hold on a path lasts if the deletion dies before ending it.
DELETION_HOLD_S = 600.0
DELETING = "deleting_until"  # a path record's deletion hold ends then
DELETION_ONLY = "deletion_only"  # a path record made by a deletion's hold alone (no moved file's)
# A path record holding a force-removed file's bytes until the reaper deletes them
# (`catalogue.removed_paths`): {guid, url, at, moved}; its record's own `guid` is None, and it
# carries REMOVAL_HOLD (True) and REMOVAL_QUEUED (when its deletion was last queued).
REMOVED, REMOVAL_HOLD, REMOVAL_QUEUED = "removed", "removal_hold", "removal_queued"
REMOVED_BEING_DELETED = ("the bytes of a removed file at the SE's path for this LFN are being deleted; "
                         "try again in a few minutes")
# Every write and check goes by `_id`; an audit reads its SE's paths once a run; the reaper finds
# the paths of removed files due for deletion under INDEX_ORDER (`removed_paths.due`).
INDEXES: list[IndexSpec] = [IndexSpec(MOVED_PATHS, [(REMOVAL_HOLD, 1), (REMOVAL_QUEUED, 1)],
                                      name="moved_paths_removal_due", sparse=True, index_order=True)]


def key_of(se: str, path: str) -> str:
    """A path record's `_id`."""
    return f"{se}{path}"  # an SE name has no '/', a path starts with one


_key = key_of


async def hold(db: AsyncDatabase[Document], records: Iterable[Mapping[str, Any]]) -> None:
    """Record the paths the replicas of these moved records hold (their GUID as `guid` or, while
    they move, `moving_guid`): one unordered insert, none when no replica has a path of its own.
    A path recorded already is its holder's: no other file's replica can be at it (`HELD`)."""
    docs = [{"_id": _key(replica["se"], replica[PATH_LFN]), "se": replica["se"], "path": replica[PATH_LFN],
             "guid": record.get("guid") or record.get("moving_guid")}
            for record in records for replica in record.get("replicas", []) if replica.get(PATH_LFN)]
    await insert_ignoring_duplicates(db[MOVED_PATHS], docs)


async def held_by_others(db: AsyncDatabase[Document], wanted: Iterable[tuple[str, str, Any]]
                         ) -> dict[tuple[str, str], str]:
    """Of `(lfn, se, guid)` (a replica to add at lfn's own path on se, for the file of that GUID),
    the `(lfn, se)` whose path holds another file's catalogued bytes, or bytes a deletion is
    removing, with the reason (HELD, BEING_DELETED). One `_id $in` read (and `_live`'s reads for
    the paths found, rare: a path a moved file left)."""
    wanted = list(wanted)
    if not wanted:
        return {}
    keys = {_key(se, lfn): (lfn, se, guid) for lfn, se, guid in wanted}
    with database_errors():
        found = [doc async for doc in read_by_ids(db[MOVED_PATHS], keys)]
    others = [doc for doc in found if doc.get("guid") is None or doc["guid"] != keys[doc["_id"]][2]]
    at = now()
    return {(keys[doc["_id"]][0], keys[doc["_id"]][1]): _why_held(doc, at) for doc in await _live(db, others)}


def _why_held(record: Mapping[str, Any], at: dt.datetime) -> str:
    if record.get(REMOVED):
        return REMOVED_BEING_DELETED
    return BEING_DELETED if _deleting(record, at) else HELD


def _deleting(record: Mapping[str, Any], at: dt.datetime) -> bool:
    until = record.get(DELETING)
    if isinstance(until, dt.datetime) and until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    return isinstance(until, dt.datetime) and until > at


async def hold_for_deletion(db: AsyncDatabase[Document], places: Iterable[tuple[str, str, str | None]]) -> None:
    """A deletion is about to delete the bytes at these `(se, path, guid)` (of the file of that
    GUID): hold each path for DELETION_HOLD_S. One unordered insert; a path held already (a moved
    file's record, or a deletion's before) has its hold renewed by one more update."""
    until = now() + dt.timedelta(seconds=DELETION_HOLD_S)
    docs = {_key(se, path): {"_id": _key(se, path), "se": se, "path": path, "guid": guid, DELETION_ONLY: True,
                             DELETING: until} for se, path, guid in places}
    held: list[str] = []
    try:
        with database_errors():
            if docs:
                await db[MOVED_PATHS].insert_many(list(docs.values()), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        held = [list(docs)[e["index"]] for e in errors]
    with database_errors():
        for flt in by_ids(held):
            await db[MOVED_PATHS].update_many(flt, {"$set": {DELETING: until}})


async def end_deletion(db: AsyncDatabase[Document], places: Iterable[tuple[str, str]]) -> None:
    """The deletion at these `(se, path)` ended (bytes deleted, or left alone): its holds go, a
    moved file's record there stays as it was."""
    keys = sorted({_key(se, path) for se, path in places})
    with database_errors():
        for flt in by_ids(keys):
            await db[MOVED_PATHS].delete_many({**flt, DELETION_ONLY: True})
            await db[MOVED_PATHS].update_many(flt, {"$unset": {DELETING: ""}})


async def release(db: AsyncDatabase[Document], gone: Iterable[tuple[str, str]]) -> None:
    """The bytes at these `(se, path)` were deleted: their paths are free again. A removed file's
    hold stays: its bytes' deletion is another one, which releases it (`catalogue.removed_paths`)."""
    keys = sorted({_key(se, path) for se, path in gone})
    with database_errors():
        for flt in by_ids(keys):
            await db[MOVED_PATHS].delete_many({**flt, REMOVED: {"$exists": False}})


async def held_on(db: AsyncDatabase[Document], se: str, paths: Sequence[str] | None = None) -> set[str]:
    """The paths held on se (of `paths`, or all): their bytes are a moved file's, not dark data."""
    with database_errors():
        if paths is not None:
            found = [doc async for doc in read_by_ids(db[MOVED_PATHS], [_key(se, p) for p in paths])]
        else:
            found = await db[MOVED_PATHS].find({"se": se}).to_list()
    return {doc["path"] for doc in await _live(db, found)}


async def _live(db: AsyncDatabase[Document], records: list[Document]) -> list[Document]:
    """Of path records, those whose holder still has a replica at the path: the others (its replica
    left the catalogue without the reaper, e.g. an administrator's catalogue-only removal or a
    forced file removal; its bytes, if any, are dark data now) are deleted, guarded by their GUID.

    The holder is found by its GUID; a holder half-way through another move carries it as
    `moving_guid` (no index: read only when a GUID is missing, once per stale record, since those
    are then deleted), and the GUID is read again after that, so a move passing from one to the
    other between the reads is not taken for a holder gone."""
    guids = sorted({doc["guid"] for doc in records if doc.get("guid") is not None})
    if not guids:
        return records
    projection = {"guid": 1, "moving_guid": 1, "replicas.se": 1, f"replicas.{PATH_LFN}": 1}
    holders: dict[str, Document] = {}
    for field in ("guid", "moving_guid", "guid"):
        missing = [guid for guid in guids if guid not in holders]
        if field == "guid":  # its index, on any database (`find_by_values`)
            holders.update((doc["guid"], doc) for doc in await find_by_values(db[FILES], "guid", missing, projection))
            continue
        with database_errors():
            for start in range(0, len(missing), READ_SLICE):
                async for doc in db[FILES].find({field: {"$in": missing[start:start + READ_SLICE]}}, projection):
                    holders[doc[field]] = doc
    live, stale = [], []
    at = now()
    for record in records:
        holder = holders.get(record.get("guid") or "")
        if record.get("guid") is None or _deleting(record, at) or (holder is not None and any(
                r.get("se") == record["se"] and storage_lfn(holder["_id"], r) == record["path"]
                for r in holder.get("replicas", []))):
            live.append(record)
        else:
            stale.append(record)
    with database_errors():
        for record in stale:
            await db[MOVED_PATHS].delete_one({"_id": record["_id"], "guid": record["guid"]})
    return live
