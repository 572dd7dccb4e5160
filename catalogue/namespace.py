"""The namespace: mkdir, ls, stat, remove, chmod and chown over directories and files (moves
are `catalogue.moves`).

Every function takes the database first and the caller second, and applies the rules of
`catalogue.permissions` (ancestors come from one `_id $in` query).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import directory_move_plan as plan
from catalogue.children import direct_children, subtree_range
from catalogue.directories import (
    DIRECTORIES,
    directory_document,
    entry_view,
    fetch_directories,
    insert_directories,
    insert_ignoring_duplicates,
    now,
)
from catalogue.directory_moves import MOVE_LEASE, looked_above, moves_below
from catalogue.file_removal import remove_records
from catalogue.files import FILES
from catalogue.lfn import ROOT, ancestors, check_lfn, descendant_pattern, is_within, parent_of
from catalogue.metadata import metadata_fields_for
from catalogue.metadata_fields import EFFECTIVE, ORIGIN
from catalogue.permissions import (
    EXECUTE,
    PERMISSION_FIELDS,
    READ,
    ROOT_ENTRY,
    check_chmod,
    check_chown,
    creation_denial,
    entry_denial,
    permits,
    removal_denial,
    require,
    traversal_denial,
    within_reach,
)
from catalogue.usage import MOVING, drop_directory_usage
from catalogue.vos import registry
from kernel.db import Document, database_errors, for_output, page_by_id
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from kernel.principal import Principal

LIST_PROJECTION = {"replicas": 0, "meta": 0}
# What reading an entry shows beyond its attributes, so only to a caller with r on it (as POSIX
# asks r for extended attributes, and as /find, GET /files and /replicas/resolve ask): its
# metadata, and a file's replicas (where its bytes are).
READ_FIELDS = frozenset({"replicas", "meta", EFFECTIVE, ORIGIN})
REMOVE_BATCH = 1000  # files of a tree removed per call of `remove_records`
CHANGE_ROUNDS = 5  # reads of an entry whose owner, group or mode keep changing under a chmod or chown


async def find_entry(db: AsyncDatabase[Document], path: str) -> tuple[Document, str] | None:
    """The entry at `path` and its kind ("directory" or "file"), or None."""
    if path == ROOT:
        return ROOT_ENTRY, "directory"
    with database_errors():
        doc = await db[DIRECTORIES].find_one({"_id": path})
        if doc is not None:
            return doc, "directory"
        doc = await db[FILES].find_one({"_id": path})
    return (doc, "file") if doc is not None else None


async def existing_entry(db: AsyncDatabase[Document], path: str) -> tuple[Document, str]:
    found = await find_entry(db, path)
    if found is None:
        raise NotFound(f"{path} does not exist")
    return found


async def mkdir(
    db: AsyncDatabase[Document], principal: Principal, path: str, *, parents: bool = False, mode: int | None = None
) -> dict[str, Any]:
    """Create a directory (with `parents`, every missing ancestor too; an existing one is fine)."""
    check_lfn(path)
    if path == ROOT:
        return entry_view(ROOT_ENTRY, "directory")
    chain = [*ancestors(path), path]
    dirs = await fetch_directories(db, chain)
    require(traversal_denial(principal, path, dirs), path)
    if path in dirs:
        if parents:
            return entry_view(dirs[path], "directory")
        raise Conflict(f"directory {path} exists already")
    missing = [p for p in chain if p != ROOT and p not in dirs]
    if not parents and missing != [path]:
        raise NotFound(f"parent directory {parent_of(path)} does not exist (use parents to create it)")
    with database_errors():
        clash = await db[FILES].find_one({"_id": {"$in": missing}}, {"_id": 1})
    if clash is not None:
        raise Conflict(f"{clash['_id']} is a file, not a directory")
    require(creation_denial(principal, path, dirs), path)
    at = now()
    vos = await registry(db)
    docs = [directory_document(p, principal, mode=mode if p == path else None, at=at,
                               metadata=metadata_fields_for(p, {}, dirs, vos)) for p in missing]
    await insert_directories(db, docs)
    gone, now_above = await looked_above(db, [path], PERMISSION_FIELDS)
    # A chmod or chown above since the check, returned before the insert: judged as it stands now.
    before = {p: d for p, d in now_above.items() if p not in missing}
    denied = None if gone else creation_denial(principal, path, before)
    if gone or denied:
        # A directory above went (removed or moved) between the look and the insert: what this
        # call made would be left without it. Taken back out; the removal sees it gone.
        with database_errors():
            await db[DIRECTORIES].delete_many({"_id": {"$in": missing}, "created": at, "owner": principal.sub})
        require(denied, path)
        raise Conflict(f"a directory above {path} was removed or is being moved; try again")
    return entry_view(docs[-1], "directory")


async def stat(db: AsyncDatabase[Document], principal: Principal, path: str) -> dict[str, Any]:
    """The entry at `path`; needs x on every ancestor. Traversal is checked before existence, so
    a hidden entry and a missing one get the same refusal. Its metadata and a file's replicas
    (where its bytes are) are reading it: shown only to a caller with r on it (`shown_entry`)."""
    check_lfn(path)
    dirs = await fetch_directories(db, ancestors(path))
    require(traversal_denial(principal, path, dirs), path)
    doc, kind = await existing_entry(db, path)
    return shown_entry(principal, doc, kind)


def shown_entry(principal: Principal, doc: Document, kind: str) -> dict[str, Any]:
    """An entry as the caller sees it: its attributes, and what reading it shows (READ_FIELDS)
    only with r on it."""
    if not permits(principal, doc, READ):
        doc = {k: v for k, v in doc.items() if k not in READ_FIELDS}
    return entry_view(doc, kind)


async def _merged(*cursors: AsyncIterator[tuple[str, Document]]) -> AsyncIterator[tuple[str, Document]]:
    """Merge cursors that are each sorted by name into one sorted stream (one item per cursor held)."""
    heads: list[tuple[str, Document] | None] = [await anext(c, None) for c in cursors]
    while any(h is not None for h in heads):
        index = min((i for i, h in enumerate(heads) if h is not None), key=lambda i: heads[i][1]["name"])  # type: ignore[index]
        item = heads[index]
        assert item is not None
        yield item
        heads[index] = await anext(cursors[index], None)


async def _children(
    collection: AsyncCollection[Document], kind: str, path: str, after: str | None, limit: int | None
) -> AsyncIterator[tuple[str, Document]]:
    # Index: `_id` — ranges that jump over subdirectories' subtrees (catalogue.children).
    async for page in direct_children(collection, path, LIST_PROJECTION, after=after, limit=limit):
        for doc in page:
            yield kind, doc


async def _listable(db: AsyncDatabase[Document], principal: Principal, path: str) -> None:
    check_lfn(path)
    dirs = await fetch_directories(db, ancestors(path))
    require(traversal_denial(principal, path, dirs), path)  # before existence: hidden = missing
    doc, kind = await existing_entry(db, path)
    if kind != "directory":
        raise InvalidInput(f"{path} is a file, not a directory")
    require(entry_denial(principal, path, doc, READ | EXECUTE, dirs), path)


async def open_directory(
    db: AsyncDatabase[Document], principal: Principal, path: str, *, after: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Check the caller may list `path`, then return a stream of all its entries sorted by name,
    read page by page from two key ranges in constant memory (so errors come before a response
    starts)."""
    await _listable(db, principal, path)

    async def entries() -> AsyncIterator[dict[str, Any]]:
        async for kind, doc in _merged(
            _children(for_output(db[DIRECTORIES]), "directory", path, after, None),
            _children(for_output(db[FILES]), "file", path, after, None),
        ):
            if within_reach(principal, doc["_id"]):
                yield shown_entry(principal, doc, kind)

    return entries()


async def list_directory(
    db: AsyncDatabase[Document], principal: Principal, path: str, *, after: str | None = None, limit: int = 1000
) -> dict[str, Any]:
    """One page of a directory: `{"entries": [...], "next_after": name | None}` (keyset paging)."""
    await _listable(db, principal, path)
    entries: list[dict[str, Any]] = []
    async for kind, doc in _merged(
        _children(for_output(db[DIRECTORIES]), "directory", path, after, limit + 1),
        _children(for_output(db[FILES]), "file", path, after, limit + 1),
    ):
        if len(entries) == limit:
            return {"entries": entries, "next_after": entries[-1]["name"]}
        if within_reach(principal, doc["_id"]):  # another VO's root below ours is not listed
            entries.append(shown_entry(principal, doc, kind))
    return {"entries": entries, "next_after": None}


async def remove(db: AsyncDatabase[Document], principal: Principal, path: str, *, recursive: bool = False) -> int:
    """Remove a file, an empty directory, or (admins, `recursive`) a whole tree; returns entries removed."""
    check_lfn(path)
    if path == ROOT:
        raise InvalidInput("the root directory cannot be removed")
    dirs = await fetch_directories(db, ancestors(path))
    require(traversal_denial(principal, path, dirs), path)  # before existence: hidden = missing
    doc, kind = await existing_entry(db, path)
    require(removal_denial(principal, path, dirs), path)
    if kind == "directory" and plan.held(doc.get(MOVING), MOVE_LEASE):  # the move would leave its tree orphaned
        raise Conflict(f"{path} is being moved; try again once the move ended")
    if kind == "file":
        if doc.get("replicas"):
            raise Conflict(f"{path} still has {len(doc['replicas'])} replica(s); remove them first")
        removed_files, refused = await remove_records(db, [path], force=False)
        if path in refused:
            raise Conflict(f"{path}: {refused[path]}")
        return len(removed_files)
    child = await _any_below(db, path)
    removed = 0
    if child:
        if not recursive:
            raise Conflict(f"directory {path} is not empty")
        if not principal.is_admin:
            raise Forbidden("only admins may remove a directory recursively")
        if any(is_within(root, path) for root in principal.foreign_roots):
            raise Forbidden(f"{path} holds another VO's namespace root; only a global admin may remove it")
        if await moves_below(db, path):  # its records would be taken from under the move
            raise Conflict(f"a directory below {path} is being moved; try again once the move ended")
        removed += await _remove_tree_files(db, path)
        with database_errors():
            removed += (await db[DIRECTORIES].delete_many({"_id": {"$regex": descendant_pattern(path)}})).deleted_count
        await drop_directory_usage(db, path)
    with database_errors():
        removed += (await db[DIRECTORIES].delete_one({"_id": path})).deleted_count
    if not child and removed and await _any_below(db, path):
        # An entry made below it between the look and the delete (its writer saw the directory
        # there): it would be left without its directory, out of listings and of the directory's
        # modes. The directory comes back; writers that look after their insert give up.
        await insert_ignoring_duplicates(db[DIRECTORIES], [doc])
        raise Conflict(f"directory {path} is not empty")
    return removed


async def _any_below(db: AsyncDatabase[Document], path: str) -> list[Document]:
    """One directory or file below `path`, if any (anything in the range is below it: one index probe each)."""
    low, high = subtree_range(path)
    return await page_by_id(db[DIRECTORIES], {}, {"_id": 1}, after=low, before=high, size=1) or await page_by_id(
        db[FILES], {}, {"_id": 1}, after=low, before=high, size=1)


async def _remove_tree_files(db: AsyncDatabase[Document], path: str) -> int:
    """Remove every file below `path`, REMOVE_BATCH at a time in `_id` order, each record taken
    off the counters by the call that deletes it (`catalogue.file_removal`, as a removal of those
    files racing this one would); returns how many it removed. A file that another request still
    holds stops the tree's removal (409) once the rest of its files are gone."""
    low, high = subtree_range(path)
    removed = 0
    held: dict[str, str] = {}
    while page := await page_by_id(db[FILES], {}, {"_id": 1}, after=low, before=high, size=REMOVE_BATCH):
        lfns = [doc["_id"] for doc in page]
        gone, refused = await remove_records(db, lfns, force=True)
        removed += len(gone)
        held.update(refused)
        low = lfns[-1]
    if held:
        lfn, reason = next(iter(held.items()))
        raise Conflict(f"{len(held)} file(s) below {path} were not removed (e.g. {lfn}: {reason}); the rest were, "
                       "try again")
    return removed


async def chmod(db: AsyncDatabase[Document], principal: Principal, path: str, mode: int) -> dict[str, Any]:
    """Set the mode bits of an entry (its owner or an admin)."""
    check_lfn(path)
    if not 0 <= mode <= 0o777:
        raise InvalidInput(f"mode must be between 0 and 0o777, got {mode}")
    return await _change(db, principal, path, {"mode": mode}, lambda doc: check_chmod(principal, doc))


async def chown(
    db: AsyncDatabase[Document], principal: Principal, path: str, *, owner: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """Change the owner (admins) and/or the group (the owner, to one of their groups) of an entry."""
    check_lfn(path)
    changes = {k: v for k, v in {"owner": owner, "group": group}.items() if v is not None}
    if not changes or any(not isinstance(v, str) or not v for v in changes.values()):
        raise InvalidInput("give a non-empty owner and/or group")
    return await _change(db, principal, path, changes, lambda doc: check_chown(principal, doc, owner, group))


async def _change(
    db: AsyncDatabase[Document], principal: Principal, path: str, changes: dict[str, Any], check: Any
) -> dict[str, Any]:
    if path == ROOT:
        raise InvalidInput("the root directory cannot be changed")
    dirs = await fetch_directories(db, ancestors(path))
    require(traversal_denial(principal, path, dirs), path)  # before existence: hidden = missing
    # Guarded by the owner, group and mode the check judged: a chown (or chmod) landing between
    # the check and the write makes it miss, and it is judged again on the entry as it is then.
    for _ in range(CHANGE_ROUNDS):
        doc, kind = await existing_entry(db, path)
        check(doc)
        collection = db[DIRECTORIES] if kind == "directory" else db[FILES]
        updated = {**doc, **changes, "modified": now()}
        with database_errors():
            written = await collection.update_one({"_id": path, **{f: doc.get(f) for f in PERMISSION_FIELDS}},
                                                  {"$set": {**changes, "modified": updated["modified"]}})
        if written.matched_count:
            return entry_view(updated, kind)
    raise Conflict(f"{path} kept changing owner, group or mode meanwhile; try again")
