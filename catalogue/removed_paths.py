"""The paths of a force-removed file's replicas, held until the reaper has deleted their bytes.

A forced removal forgets a file that still has replicas. Its bytes stay at each replica's path
(`catalogue.storage_paths`), and a new file registered at the same LFN with a replica on that SE
derives the same path: its registrant was handed the old owner's bytes, and those bytes were
nobody's (dark) until an audit. So the removal holds each replica's path (a `moved_paths` record
with no holder GUID, which refuses a replica there to anyone, the old owner too, with
REMOVED_BEING_DELETED) *before* it deletes the record, and the reaper deletes the bytes and then
releases the path (`transfers.removed_bytes`, through a deletion request).

A hold whose record was not deleted after all (the removal gave up, or died between the hold and
the delete) is taken back by the removal, or found by the reaper (`removal_states`: the file of
that GUID still has a replica at the path) and taken back then; bytes are deleted only once no
catalogued replica stands at the path. The reaper reads and releases the holds of a batch together
(`removal_states`, `release_removed`), each write guarded by the hold and its GUID.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pymongo import DeleteOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue.collection_names import FILES
from catalogue.directories import DUPLICATE_KEY, now
from catalogue.moved_paths import DELETION_ONLY, MOVED_PATHS, REMOVAL_HOLD, REMOVAL_QUEUED, REMOVED, key_of
from catalogue.storage_paths import storage_lfn
from catalogue.usage import REMOVAL_LEASE, REMOVING
from kernel.db import (
    IN_TURN_MAX,
    INDEX_ORDER,
    Document,
    bulk_write_chunked,
    database_errors,
    find_by_values,
    read_by_ids,
)

# A hold whose deletion request was queued this long ago and is still there is queued again (its
# request failed for good, on a permanent error; an open request is joined). The reaper retries a
# failing deletion itself on a shorter backoff (`transfers.removed_bytes.RETRY_CAP_S`).
REQUEUE_S = 900.0
NOT_QUEUED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class RemovedPlace:
    """Where a removed file's replica had its bytes: the SE, the path, the file's GUID, the URL."""

    se: str
    path: str
    guid: str | None
    url: str | None = None


def places_of(records: Mapping[str, Mapping[str, object]]) -> list[RemovedPlace]:
    """The replicas' places of file records `{lfn: doc}` (each read with its `guid` and its
    replicas' `se`, `url` and `path_lfn`)."""
    out = []
    for lfn, doc in records.items():
        replicas = doc.get("replicas")
        for replica in replicas if isinstance(replicas, list) else []:
            guid = doc.get("guid")
            out.append(RemovedPlace(replica["se"], storage_lfn(lfn, replica), guid if isinstance(guid, str) else None,
                                    replica.get("url")))
    return out


async def hold_removed(db: AsyncDatabase[Document], places: Iterable[RemovedPlace]) -> None:
    """Hold these paths for their bytes' deletion (before the records go): one unordered insert,
    and for the paths with a record already, one read and one bulk update. A moved file's
    record at the path (the file's own) becomes the hold, and comes back as it was if the hold is
    taken back (`moved`); so does a deletion's hold there (`deletion`)."""
    wanted = {key_of(p.se, p.path): p for p in places}
    if not wanted:
        return
    at = now()
    fresh = [_hold(place, {}, at)[0] | {"_id": key} for key, place in wanted.items()]
    existing: dict[str, Document] = {}
    try:
        with database_errors():
            await db[MOVED_PATHS].insert_many(fresh, ordered=False)
    except BulkWriteError as exc:  # a record there already (a moved file's, a deletion's hold): updated
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
        existing = await _path_records(db, [fresh[e["index"]]["_id"] for e in exc.details["writeErrors"]])
    ops = []
    for key, doc in existing.items():
        fields, unset = _hold(wanted[key], doc, at)
        ops.append(UpdateOne({"_id": key}, {"$set": fields, "$unset": unset}, upsert=True))
    await bulk_write_chunked(db[MOVED_PATHS], ops)


async def _path_records(db: AsyncDatabase[Document], keys: Iterable[str]) -> dict[str, Document]:
    with database_errors():
        return {doc["_id"]: doc async for doc in read_by_ids(db[MOVED_PATHS], keys,
                                                             {"guid": 1, REMOVED: 1, DELETION_ONLY: 1})}


def _hold(place: RemovedPlace, doc: Mapping[str, Any], at: dt.datetime) -> tuple[Document, Document]:
    """The fields a hold of place sets on the path's record `doc` as read ({} if none), and unsets."""
    earlier = doc.get(REMOVED) or {}
    if earlier.get("guid") == place.guid:  # held by this removal already (an earlier round)
        moved, deleting = earlier.get("moved", False), earlier.get("deletion", False)
    else:
        moved = place.guid is not None and doc.get("guid") == place.guid and not doc.get(DELETION_ONLY)
        deleting = bool(doc.get(DELETION_ONLY))
    return ({"se": place.se, "path": place.path, "guid": None, REMOVAL_HOLD: True, REMOVAL_QUEUED: NOT_QUEUED,
             REMOVED: {"guid": place.guid, "url": place.url, "at": at, "moved": moved, "deletion": deleting}},
            {DELETION_ONLY: ""})


async def unhold_removed(db: AsyncDatabase[Document], places: Iterable[RemovedPlace]) -> None:
    """Take back holds whose file was not removed after all: a moved file's record, or a
    deletion's hold, comes back as it was; the others go. Guarded by the GUID held for."""
    ops: list[UpdateOne | DeleteOne] = []
    back = {"$unset": {REMOVED: "", REMOVAL_HOLD: "", REMOVAL_QUEUED: ""}}
    for place in {key_of(p.se, p.path): p for p in places}.values():
        mine = {"_id": key_of(place.se, place.path), REMOVAL_HOLD: True, f"{REMOVED}.guid": place.guid}
        ops.append(UpdateOne({**mine, f"{REMOVED}.moved": True}, {"$set": {"guid": place.guid}, **back}))
        ops.append(UpdateOne({**mine, f"{REMOVED}.deletion": True},
                             {"$set": {"guid": place.guid, DELETION_ONLY: True}, **back}))
        ops.append(DeleteOne(mine))
    if ops:
        await bulk_write_chunked(db[MOVED_PATHS], ops, ordered=True)


async def due(db: AsyncDatabase[Document], limit: int) -> list[RemovedPlace]:
    """Holds whose deletion is not queued yet (or was queued REQUEUE_S ago): from the index
    `moved_paths_removal_due` under INDEX_ORDER (only removed files' holds carry its fields)."""
    before = now() - dt.timedelta(seconds=REQUEUE_S)
    with database_errors():
        found = await db[MOVED_PATHS].find({REMOVAL_HOLD: True, REMOVAL_QUEUED: {"$lt": before}},
                                           comment=INDEX_ORDER).sort(REMOVAL_QUEUED, 1).limit(limit).to_list()
    return [RemovedPlace(doc["se"], doc["path"], doc[REMOVED].get("guid"), doc[REMOVED].get("url")) for doc in found]


async def queued(db: AsyncDatabase[Document], places: Sequence[RemovedPlace]) -> None:
    """Their deletions were queued now."""
    at = now()
    await bulk_write_chunked(db[MOVED_PATHS], [UpdateOne({"_id": key_of(p.se, p.path), REMOVAL_HOLD: True,
                                                          f"{REMOVED}.guid": p.guid},
                                                         {"$set": {REMOVAL_QUEUED: at}}) for p in places])


State = Literal["delete", "wait", "released"]
Target = tuple[str, str]  # (se, path)


async def removal_states(db: AsyncDatabase[Document], targets: Iterable[Target]
                         ) -> dict[Target, tuple[State, RemovedPlace | None]]:
    """What the reaper does with the hold at each `(se, path)`: `delete` its bytes (its file is
    gone from the catalogue), `wait` (its removal is still at work), or nothing (`released`: no
    hold there, or the file kept its replica there after all, whose hold is taken back now).
    One bounded read of the holds by `_id`, one of their files by GUID (`files_by_guid`, in
    slices), and the holds taken back in two bulk writes at most."""
    wanted = {key_of(se, path): (se, path) for se, path in targets}
    records = await _path_records(db, wanted)
    held = {key: RemovedPlace(se, path, records[key][REMOVED].get("guid"), records[key][REMOVED].get("url"))
            for key, (se, path) in wanted.items() if (records.get(key) or {}).get(REMOVED)}
    holders = await _files_by_guid(db, {place.guid for place in held.values() if place.guid is not None})
    states: dict[Target, tuple[State, RemovedPlace | None]] = {target: ("released", None) for target in wanted.values()}
    moved: list[RemovedPlace] = []
    kept: list[RemovedPlace] = []
    at = now()
    for place in held.values():
        decision = _decide(place, holders.get(place.guid or ""), at)
        if decision == "delete" or decision == "wait":
            states[(place.se, place.path)] = (decision, place)
        else:
            (moved if decision == "moved" else kept).append(place)
    await _hold_as_moved(db, moved)
    await unhold_removed(db, kept)
    return states


async def _files_by_guid(db: AsyncDatabase[Document], guids: Iterable[str]) -> dict[str, Document]:
    """The files of these GUIDs, IN_TURN_MAX GUIDs a `find_by_values` so that each is read from
    `files_by_guid` on Cairn's FerretDB builds before cairn.14 too (more in one go are one `$in`
    over every file there; from cairn.14 each call is one indexed `$in`)."""
    wanted, found = sorted(guids), dict[str, Document]()
    for start in range(0, len(wanted), IN_TURN_MAX):
        found.update((doc["guid"], doc) for doc in await find_by_values(
            db[FILES], "guid", wanted[start:start + IN_TURN_MAX], {"guid": 1, "replicas": 1, REMOVING: 1}))
    return found


def _decide(place: RemovedPlace, holder: Mapping[str, Any] | None, at: dt.datetime
            ) -> Literal["delete", "wait", "moved", "kept"]:
    """`delete`, `wait`, or, when the file of the hold's GUID (`holder`) kept its replica at the
    path, `moved` (a path it was moved from) or `kept` (its own)."""
    if place.guid is None or holder is None or not any(r.get("se") == place.se and storage_lfn(holder["_id"], r)
                                                       == place.path for r in holder.get("replicas", [])):
        return "delete"
    marked_at = (holder.get(REMOVING) or {}).get("at")
    if isinstance(marked_at, dt.datetime) and marked_at.tzinfo is None:
        marked_at = marked_at.replace(tzinfo=dt.UTC)
    if isinstance(marked_at, dt.datetime) and at - marked_at < REMOVAL_LEASE:
        return "wait"
    return "moved" if holder["_id"] != place.path else "kept"


async def _hold_as_moved(db: AsyncDatabase[Document], places: Sequence[RemovedPlace]) -> None:
    """The file's bytes at paths it was moved from: held for it as a move does."""
    await bulk_write_chunked(db[MOVED_PATHS], [
        UpdateOne({"_id": key_of(p.se, p.path), REMOVAL_HOLD: True, f"{REMOVED}.guid": p.guid},
                  {"$set": {"guid": p.guid}, "$unset": {REMOVED: "", REMOVAL_HOLD: "", REMOVAL_QUEUED: ""}})
        for p in places])


async def release_removed(db: AsyncDatabase[Document], places: Iterable[RemovedPlace]) -> None:
    """The bytes at these places were deleted: their paths are free again (one bulk write). Each
    goes only while it is still the hold for that file's GUID, never another's since."""
    await bulk_write_chunked(db[MOVED_PATHS], [
        DeleteOne({"_id": key_of(p.se, p.path), REMOVAL_HOLD: True, f"{REMOVED}.guid": p.guid}) for p in places])
