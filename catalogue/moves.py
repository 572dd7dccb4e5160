"""Moving (renaming) a file or a directory with everything below it (`cairn mv`).

Moves have no transaction to lean on: the new records are written first and the old ones
removed after, batch by batch, so a crash half-way leaves a record at its old place, its new
place or both, never neither: a move cut short is finished or taken back by the transfer
workers' sweep (a file's: `catalogue.move_counts`; a directory's: `catalogue.directory_move_repair`,
planned by `catalogue.directory_move_plan`, whose marks keep writers out of both trees). One call
moves a given file (`catalogue.file_move`) or directory (its `moving` mark), so a retried or
concurrent move is refused rather than copying it twice; a directory move and the moves and
removals of files below it exclude each other (`catalogue.directory_moves`; files registered below
a moving directory are given up by their registration); a file whose replicas change while its
directory moves is copied again from a fresh read. The bytes on the SEs do not move: each replica
keeps its URL and the LFN it was derived from, and that path stays held (`catalogue.moved_paths`).
A directory never carries another VO's nested namespace root along, nor is moved over one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from catalogue import change_feed, guid_holds, move_requests, moved_paths
from catalogue import directory_move_plan as plan
from catalogue.children import subtree_range
from catalogue.dataset_contents import DATASET_FILES
from catalogue.directories import DIRECTORIES, entry_view, fetch_directories, find_by_ids, now
from catalogue.directory_moves import MOVE_LEASE, files_held_below, moves_around
from catalogue.file_move import landing, move_file_record
from catalogue.file_rules import NAMED_BY
from catalogue.files import FILES
from catalogue.lfn import ROOT, ancestors, check_lfn, is_within, name_of, parent_of
from catalogue.metadata import metadata_fields_for
from catalogue.namespace import existing_entry, find_entry
from catalogue.permissions import creation_denial, removal_denial, require, traversal_denial
from catalogue.storage_paths import moved_replicas
from catalogue.usage import COPY_CALL, MOVED_BY, MOVING, REMOVING, WITHDRAWN
from catalogue.vos import Vo, registry
from kernel.db import ID_ORDER, INDEX_ORDER, Document, database_errors, page_by_id, pages_by_id, read_by_ids
from kernel.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from kernel.marks import Mark
from kernel.principal import Principal

MOVE_BATCH = 1000
RELOCATE_ROUNDS = 10  # times a directory move copies again the files that changed while it copied them
LEFTOVER_ROUNDS = 5  # passes over a tree, for records a writer giving up held at their new place
LEFTOVER_WAIT = 0.2  # seconds between two passes


async def move(db: AsyncDatabase[Document], principal: Principal, source: str, destination: str, *,
               lease: dt.timedelta = MOVE_LEASE, request_id: str | None = None) -> dict[str, Any]:
    """Rename or move a file or a directory (with everything below it) to a path that is free; a
    directory's move holds its marks for `lease` between two batches (`directory_move_lease_s`).
    A move named `request_id` sent again answers what its first sending placed
    (`catalogue.move_requests`)."""
    check_lfn(source)
    check_lfn(destination)
    if source == ROOT:
        raise InvalidInput("the root directory cannot be moved")
    if is_within(destination, source):
        raise InvalidInput(f"cannot move {source} into itself ({destination})")
    dirs = await fetch_directories(db, [*ancestors(source), *ancestors(destination)])
    for path in (source, destination):  # before existence: hidden = missing
        require(traversal_denial(principal, path, dirs), path)
    stamped = move_requests.stamp(principal, request_id, source, destination) if request_id else None
    if stamped and (done := await move_requests.done_before(db, destination, stamped)):
        return entry_view(*done)
    _, kind = await existing_entry(db, source)
    if await find_entry(db, destination) is not None:
        raise Conflict(f"{destination} exists already")
    target_parent = parent_of(destination)
    if target_parent != ROOT and target_parent not in dirs:
        raise NotFound(f"destination directory {target_parent} does not exist")
    require(removal_denial(principal, source, dirs), source)
    require(creation_denial(principal, destination, dirs), destination)
    if kind == "directory":
        require(_foreign_root_denial(principal, source, destination))
    vos = await registry(db)  # inherited metadata stops at the destination's VO root

    def place(record: Document) -> Document:
        """The record at its new place; inherited metadata re-derived from the new ancestors."""
        moved = {**record, "_id": destination, "parent": target_parent, "name": name_of(destination),
                 "modified": now()}
        moved.pop(MOVED_BY, None)
        if stamped:
            moved[MOVED_BY] = stamped
        if "replicas" in record:
            moved["replicas"] = moved_replicas(record["replicas"], source, destination)
        return {**moved, **metadata_fields_for(destination, record.get("meta") or {}, dirs, vos)}

    if kind == "file":
        # counted by the call once the original is gone, or by the sweep after a kill (`catalogue.move_counts`)
        _, placed = await move_file_record(db, principal, source, destination, place,
                                           lambda current: _named_by_lfn(db, principal, source, current, kind))
        return entry_view(placed, kind)
    return entry_view(await _move_directory(db, principal, source, destination, place, vos, lease), kind)


def _foreign_root_denial(principal: Principal, source: str, destination: str) -> str | None:
    """Why the caller may not move the directory `source` to `destination` for another VO's
    namespace root (nested in its own), or None: a tree holding such a root would carry that VO's
    files into the caller's VO, and a tree moved over one would hand the caller's files to it. As
    for a recursive removal (`catalogue.namespace.remove`), only a global admin may."""
    for root in principal.foreign_roots:
        if is_within(root, source):
            return f"{source} holds another VO's namespace root; only a global admin may move it"
        if is_within(root, destination):
            return f"{destination} holds another VO's namespace root; only a global admin may move a directory there"
    return None


async def _named_by_lfn(db: AsyncDatabase[Document], principal: Principal, source: str, entry: Document,
                        kind: str) -> str | None:
    """Why the file (or a file below the directory) at source must keep its LFN, or None: datasets
    and replication rules name their files by LFN, so a file a dataset holds, whose replicas a
    rule locks or that is a rule's DID (`catalogue.file_rules`), is not renamed (Rucio renames no
    such file either); detach it or delete the rule first. Nor one with a replica being written:
    its writer finishes it by LFN. Asked once the move's mark is on (an attach or a rule looks
    for the mark after its own write: one of the two sees the other). Reads by index
    (`dataset_files_by_lfn`; a directory's files in one look by `_id` range). A file below a
    directory is named only to a caller who can reach it (`_told`)."""
    below: Any = source
    if kind == "directory":  # one look at the subtree for a file held any of the three ways
        low, high = subtree_range(source)
        below = {"$gt": low, "$lt": high}
        with database_errors():
            entry = await db[FILES].find_one(
                {"_id": below, "$or": [{"replicas.locks": {"$gt": 0}}, {f"{NAMED_BY}.0": {"$exists": True}},
                                       {"replicas.status": "copying"}]},
                {"replicas.locks": 1, "replicas.status": 1, NAMED_BY: 1}, comment=ID_ORDER) or {}  # LFNs: a range
    replicas = entry.get("replicas", [])
    locked = any(r.get("locks") for r in replicas)
    writing = any(r.get("status") == "copying" for r in replicas)
    if locked or entry.get(NAMED_BY) or writing:
        name = await _told(db, principal, entry["_id"], source)
        if locked:
            return f"{name} has replicas locked by replication rules, which name it by its LFN; it cannot move"
        if entry.get(NAMED_BY):
            rule = f" {sorted(entry[NAMED_BY])[0]}" if name == entry["_id"] else ""
            return (f"{name} is the DID of replication rule{rule}, which names it by its LFN; it cannot move "
                    "(delete the rule first)")
        # the transfer or upload would finish a replica at an LFN that moved away
        return f"{name} has a replica being written (a transfer or an upload); move it once that ends"
    with database_errors():
        row = await db[DATASET_FILES].find_one({"lfn": below}, {"lfn": 1}, comment=INDEX_ORDER)  # LFNs: no arrays
    if row is not None:
        name = await _told(db, principal, row["lfn"], source)
        return f"{name} is attached to a dataset, which names it by its LFN; detach it before moving it"
    return None


async def _told(db: AsyncDatabase[Document], principal: Principal, lfn: str, source: str) -> str:
    """`lfn` as a refusal names it to the caller: itself where the caller can reach it, else "a
    file below `source`" (a directory's tree may hold files its mover cannot see: their names, and
    the ids of rules naming them, are not told)."""
    if lfn == source:
        return lfn
    dirs = await fetch_directories(db, ancestors(lfn))
    return lfn if traversal_denial(principal, lfn, dirs) is None else f"a file below {source}"


async def _move_directory(db: AsyncDatabase[Document], principal: Principal, source: str, destination: str,
                          place: Callable[[Document], Document], vos: Mapping[str, Vo], lease: dt.timedelta
                          ) -> Document:
    """Move a directory and everything below it, marked (`MOVING`) so that one call moves it: a
    second move of it meanwhile (a retry, another user) is refused (409) instead of copying the
    tree again and moving its usage twice; it excludes the moves and removals of files below it
    (`catalogue.directory_moves`), and moves of directories above or below it. Planned
    (`catalogue.directory_move_plan`): once its destination stands, a call cut short is finished
    by the transfer workers' sweep (`catalogue.directory_move_repair`)."""
    mark = Mark(MOVING, lease)
    call = mark.token
    with database_errors():
        marked = await db[DIRECTORIES].update_one({"$and": [{"_id": source}, plan.free(mark)]},
                                                  {"$set": {MOVING: mark.value()}})
    if not marked.modified_count:
        raise Conflict(f"{source} is being moved by another request, or was moved meanwhile; try again")
    with database_errors():
        current = await db[DIRECTORIES].find_one({"_id": source})
    if current is None or not mark.holds(current):
        raise Conflict(f"{source} was moved meanwhile; nothing moved")
    if held := await files_held_below(db, source):
        await mark.take_off(db[DIRECTORIES], [source])
        raise Conflict(f"{len(held)} file(s) below {source} are being moved or removed (e.g. "
                       f"{await _told(db, principal, held[0], source)}); try again")
    if await moves_around(db, source, destination, mark.token):
        await mark.take_off(db[DIRECTORIES], [source])
        raise Conflict(f"a directory above or below {source}, or above {destination}, is being moved; try again")
    # after the mark: see `_named_by_lfn`
    if reason := await _named_by_lfn(db, principal, source, current, "directory"):
        await mark.take_off(db[DIRECTORIES], [source])
        raise Conflict(reason)
    moved = place(current)
    moved[MOVING] = plan.destination_mark(mark, call, source)  # nothing is made below it while it fills
    try:  # claimed first, then the marks name the claim (a mark naming none would hold for good)
        await plan.intend(db, call, source, destination)
        await plan.name_call(db, mark, call, source, destination)
        with database_errors():
            await db[DIRECTORIES].insert_one(moved)
    except BaseException as exc:
        await asyncio.shield(plan.give_up(db, mark, call, source, destination))
        if isinstance(exc, DuplicateKeyError):
            raise Conflict(f"{destination} exists already") from None
        raise
    gone, denial, denied = await landing(db, principal, source, destination)  # gone: the tree would lack it
    if gone or denial or not await plan.placed(db, call):  # not placed: a sweep took the call for dead
        await plan.give_up(db, mark, call, source, destination)
        require(denial, denied)
        if gone:
            raise Conflict(f"a directory above {destination} was removed or is being moved; nothing moved")
        raise ServiceUnavailable(f"moving {source} stalled before it began; nothing moved, try again")
    await finish_tree(db, mark, call, source, destination, {destination: moved}, vos)
    moved.pop(MOVING, None)
    return moved


async def finish_tree(db: AsyncDatabase[Document], mark: Mark, call: str, source: str, destination: str,
                      placed: dict[str, Document], vos: Mapping[str, Vo]) -> None:
    """Move what is still below `source` under `destination`, then its usage, and end the move
    (`catalogue.directory_move_plan`, steps a to d). The source's record, and its mark, stay until
    everything below it has moved: the files below see the mark on an ancestor for as long as some
    of them are still at their old place. Records a writer giving up holds at the new place for a
    moment are moved in a next round; still there after LEFTOVER_ROUNDS: 503, the sweep goes on."""
    for _ in range(LEFTOVER_ROUNDS):
        for name in (DIRECTORIES, FILES):
            await _move_subtree(db[name], source, destination, placed, vos, call,
                                lambda: plan.renew(db, mark, source, destination))
        if not await _left_below(db, source):
            break
        await asyncio.sleep(LEFTOVER_WAIT)
    else:
        raise ServiceUnavailable(f"some records below {source} could not move yet; the transfer workers finish "
                                 "the move")
    await plan.renew(db, mark, source, destination)
    await plan.move_usage(db, call, source, destination)
    low, high = subtree_range(destination)
    with database_errors():
        await db[DIRECTORIES].delete_one({"_id": source, **mark.mine()})
        await db[DIRECTORIES].update_one({"_id": destination, **mark.mine()}, {"$unset": {MOVING: ""}})
        await db[DIRECTORIES].update_many({"_id": {"$gt": low, "$lt": high}, COPY_CALL: call},
                                          {"$unset": {COPY_CALL: ""}})
    await plan.settle(db, call)


async def _left_below(db: AsyncDatabase[Document], source: str) -> bool:
    """Whether a record is still below `source` (one a registration gave up is its to delete)."""
    low, high = subtree_range(source)
    return bool(await page_by_id(db[DIRECTORIES], {}, {"_id": 1}, after=low, before=high, size=1)
                or await page_by_id(db[FILES], {WITHDRAWN: {"$exists": False}}, {"_id": 1}, after=low, before=high,
                                    size=1))


async def _relocate(collection: AsyncCollection[Document], pairs: list[tuple[str, Document]], call: str
                    ) -> tuple[int, list[str]]:
    """Put records at their new `_id`s, then drop the old ones: three round trips per batch. How
    many moved (a record whose new place was taken meanwhile stays where it was), and the files
    that changed since they were read (a replica written: a file's `version` moved), whose copies
    are taken back for the caller to move again from a fresh read.

    A file's GUID is unique, so a copy carries it as `moving_guid` until the original is gone
    (the GUID index is sparse). A crash between the steps leaves the original, or both, never
    neither; a copy left with `moving_guid` still names its GUID. Every copy carries the move's
    call (COPY_CALL) until it is placed: a directory whose copy an earlier pass of the same move
    (one killed: `catalogue.directory_move_repair`) left in place is taken as moved.
    """
    if not pairs:
        return 0, []
    is_files = collection.name == FILES
    copies = []
    for _, doc in pairs:
        copy = dict(doc)
        copy.pop(REMOVING, None)  # a removal's (or move's) mark stays with the record it marked
        copy.pop(MOVING, None)
        copy[COPY_CALL] = call
        if is_files and "guid" in copy:
            copy["moving_guid"] = copy.pop("guid")
        copies.append(copy)
    if is_files:  # before any original leaves its LFN (catalogue.moved_paths)
        await moved_paths.hold(collection.database, copies)
    blocked: set[int] = set()
    try:
        with database_errors():
            await collection.insert_many(copies, ordered=False)
    except BulkWriteError as exc:
        # A record that appeared at the new place meanwhile: keep the original where it is.
        blocked = {e["index"] for e in exc.details.get("writeErrors", [])}
        if blocked and not is_files:
            ours = {doc["_id"] async for doc in read_by_ids(collection, [copies[i]["_id"] for i in blocked],
                                                            {"_id": 1}, flt={COPY_CALL: call})}
            blocked = {i for i in blocked if copies[i]["_id"] not in ours}
    moved = [i for i in range(len(pairs)) if i not in blocked]
    if not moved:
        return 0, []
    guids = [copies[i]["moving_guid"] for i in moved if copies[i].get("moving_guid")]
    await guid_holds.hold(collection.database, guids)  # no record holds them between the two writes
    try:
        changed = await _drop_originals(collection, [(pairs[i][0], copies[i]) for i in moved], by_version=is_files)
        moved = [i for i in moved if pairs[i][0] not in changed]
        await guid_holds.restore(collection, [(copies[i]["_id"], copies[i]["moving_guid"]) for i in moved
                                              if copies[i].get("moving_guid")])
        if is_files and (plain := [copies[i]["_id"] for i in moved if not copies[i].get("moving_guid")]):
            with database_errors():  # a file of no GUID: placed once its original went
                await collection.update_many({"_id": {"$in": plain}, COPY_CALL: call}, {"$unset": {COPY_CALL: ""}})
    finally:
        await asyncio.shield(guid_holds.release(collection.database, guids))
    if is_files:
        await change_feed.append(collection.database, [
            event for i in moved for event in (
                change_feed.event("file_removed", pairs[i][0], moved_to=copies[i]["_id"]),
                change_feed.event("file_registered", copies[i]["_id"], moved_from=pairs[i][0]))])
    return len(moved), sorted(changed)


async def _drop_originals(collection: AsyncCollection[Document], placed: list[tuple[str, Document]], *,
                          by_version: bool) -> set[str]:
    """Delete the originals of the copies just placed; with `by_version`, only those still at the
    version copied: the others (changed meanwhile) stay, their copies are taken back, and their
    `_id`s are returned."""
    with database_errors():
        if not by_version:
            await collection.delete_many({"_id": {"$in": [old for old, _ in placed]}})
            return set()
        versions: dict[Any, list[str]] = {}
        for old, copy in placed:
            versions.setdefault(copy.get("version"), []).append(old)
        for version, olds in versions.items():  # a batch's files hold a few versions: a few deletes
            await collection.delete_many({"_id": {"$in": olds}, "version": version})
        changed = set(await find_by_ids(collection, [old for old, _ in placed], {"_id": 1}))
        if changed:
            await collection.delete_many({"_id": {"$in": [copy["_id"] for old, copy in placed if old in changed]},
                                          COPY_CALL: placed[0][1][COPY_CALL]})
    return changed


async def _move_subtree(
    collection: AsyncCollection[Document], source: str, destination: str, placed: dict[str, Document],
    vos: Mapping[str, Vo], call: str, keep_mark: Callable[[], Awaitable[None]],
) -> None:
    """Move every record below `source` to the same place below `destination`, batch by batch,
    re-deriving inherited metadata from the directories already `placed` (directories come
    sorted by path, so a parent is always placed before its children; they are kept in
    `placed`, in memory proportional to the directories of the tree)."""
    # Index: `_id`, read by key in pages of MOVE_BATCH (a range on any database); memory stays flat
    # for files. A record a registration gave up (WITHDRAWN) is not copied: it deletes it where it is.
    low, high = subtree_range(source)
    cut = len(source)
    is_directories = collection.name == DIRECTORIES

    def placed_copy(doc: Document) -> tuple[str, Document]:
        path = destination + doc["_id"][cut:]
        copy = {**doc, "_id": path, "parent": parent_of(path), **metadata_fields_for(path, doc.get("meta") or {},
                                                                                       placed, vos)}
        if is_directories:
            placed[path] = copy
        else:
            copy["replicas"] = moved_replicas(doc.get("replicas", []), doc["_id"], path)
        return doc["_id"], copy

    batch: list[tuple[str, Document]] = []
    flt = {} if is_directories else {WITHDRAWN: {"$exists": False}}
    async for doc in pages_by_id(collection, flt, after=low, before=high, page=MOVE_BATCH):
        batch.append(placed_copy(doc))
        if len(batch) >= MOVE_BATCH:
            await _relocate_all(collection, batch, placed_copy, call)
            await keep_mark()
            batch = []
    await _relocate_all(collection, batch, placed_copy, call)


async def _relocate_all(collection: AsyncCollection[Document], batch: list[tuple[str, Document]],
                        placed_copy: Callable[[Document], tuple[str, Document]], call: str) -> None:
    """`_relocate` a batch, then again from a fresh read the files that changed meanwhile."""
    for _ in range(RELOCATE_ROUNDS):
        _, changed = await _relocate(collection, batch, call)
        if not changed:
            return
        batch = [placed_copy(doc) for doc in (await find_by_ids(collection, changed)).values() if WITHDRAWN not in doc]
    raise ServiceUnavailable(f"{len(batch)} file(s) kept changing while their directory moved (e.g. {batch[0][0]}): "
                             "they are still at their old place; move them after it")
