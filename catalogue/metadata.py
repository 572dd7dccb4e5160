"""User metadata on files and directories, with inheritance down the namespace.

Every file and directory carries three maps:
- `meta`: its own values;
- `meta_effective`: what queries see — the values inherited from every directory above it,
  nearer directories overriding farther ones, and its own values overriding all of them;
- `meta_origin`: for each effective key, the path whose own value it is.

New entries copy the effective maps of their nearest existing ancestor (already fetched, with
one `_id $in`, for the ACL check). Changing a directory's keys is one `update_many` per
collection over the subtree for all the keys of the call (`_propagate`): entries whose key came
from this directory or from farther up (or from nowhere) take the new value; entries whose key
comes from a nearer directory, or is their own, keep theirs. So a metadata query is always a
single query on `meta_effective`. The subtree stops at another VO's root nested in it: that
VO's entries inherit nothing from the directories of the VO above, and a new entry copies only
the values set within its own VO's root (`inherited`), also below a root declared after the
values above it were set.

An entry's own values are bounded in all (`metadata_fields.MAX_KEYS_PER_ENTRY` keys and
`MAX_TEXT_PER_ENTRY` characters, whatever the number of calls), checked against the values the
write is guarded to change (VERSION); inherited values do not count against an entry.

There is no transaction: a file registered while its directory's value is being changed may
keep the value it copied at registration; setting the directory's value again repairs it. Two
sets of one directory at once may propagate in the other order than they wrote: each looks at
the directory's VERSION after its propagation and propagates again what the directory holds
then if another call changed it (`_settle`). A removal is guarded and settled the same way,
and then reads the values above again, to follow a set of a directory above that passed over
the entry while the removed value was still its own (`_follow_above`).
A move re-derives the moved entries' inherited values from their new ancestors.

Permissions: setting or removing needs w on the entry (plus traversal); reading needs r on it
(plus traversal), as POSIX asks for extended attributes: stat and listings leave metadata out
for a caller without r (`catalogue.namespace.shown_entry`), and /find shows only readable files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.collection_names import FILES
from catalogue.directories import DIRECTORIES, fetch_directories, now
from catalogue.lfn import ROOT, ancestors, check_lfn, descendant_pattern, is_within
from catalogue.metadata_fields import (
    EFFECTIVE,
    ORIGIN,
    MetadataMaps,
    check_entry_bounds,
    check_key,
    field_types,
    typed_values,
    types_for,
)
from catalogue.permissions import PERMISSION_FIELDS, READ, WRITE, entry_denial, require, traversal_denial
from catalogue.vos import Vo, registry, root_of, vo_of_path
from kernel.db import Document, database_errors
from kernel.errors import Conflict, InvalidInput, NotFound
from kernel.principal import Principal

MAX_KEYS_PER_CALL = 100
"""Most keys one call sets or removes: a directory's values are written to every entry below it,
so the keys of a call multiply that work (dozens of keys per directory is generous)."""
VERSION = "meta_version"
"""Bumped by every change of an entry's own values. A set is written only over the values it
checked against the entry bounds (`metadata_fields.check_entry_bounds`) — the version read is
a guard in the update's filter — so two calls each within the bounds cannot pass them together.
Records written before it have none, matched as null: nothing to migrate."""
WRITE_TRIES = 5


def inherited(path: str, dirs: Mapping[str, Mapping[str, Any]], root: str | None = None
              ) -> tuple[dict[str, Any], dict[str, str]]:
    """Effective values and origins that a new entry at `path` inherits: those of its nearest
    existing ancestor among `dirs` (which already merge everything above it) that come from
    within `root`, the namespace root of `path`'s VO (`vos.root_of`): another VO's directories
    above that root pass nothing down, even to a directory made before the root was declared
    (whose maps copied theirs) or to an entry whose nearest directory is above the root."""
    for ancestor in reversed(ancestors(path)):
        entry = dirs.get(ancestor)
        if entry is not None:
            values, origins = dict(entry.get(EFFECTIVE) or {}), dict(entry.get(ORIGIN) or {})
            if root is None or root == ROOT:
                return values, origins
            kept = {key for key, origin in origins.items() if is_within(origin, root)}
            return {k: v for k, v in values.items() if k in kept}, {k: origins[k] for k in kept}
    return {}, {}


def metadata_fields_for(path: str, own: Mapping[str, Any], dirs: Mapping[str, Mapping[str, Any]],
                        vos: Mapping[str, Vo]) -> MetadataMaps:
    """The `meta`, `meta_effective` and `meta_origin` of a new entry with its own values `own`,
    given every VO (`vos.registry`: what it inherits stops at its VO's root)."""
    effective, origin = inherited(path, dirs, root_of(vos, path))
    effective.update(own)
    origin.update({key: path for key in own})
    return {"meta": dict(own), "meta_effective": effective, "meta_origin": origin}


async def _entry(db: AsyncDatabase[Document], path: str) -> tuple[Document, AsyncCollection[Document]]:
    check_lfn(path)
    if path == ROOT:
        raise InvalidInput("the root directory carries no metadata; set it on a top-level directory")
    with database_errors():
        doc = await db[DIRECTORIES].find_one({"_id": path})
        if doc is not None:
            return doc, db[DIRECTORIES]
        doc = await db[FILES].find_one({"_id": path})
    if doc is None:
        raise NotFound(f"{path} does not exist")
    return doc, db[FILES]


async def get_metadata(db: AsyncDatabase[Document], principal: Principal, path: str) -> dict[str, Any]:
    """`{path, type, own, effective, origin}` of a file or directory: reading it, so r on it
    (as POSIX asks for extended attributes, and as /find shows only readable files)."""
    dirs = await fetch_directories(db, ancestors(path))
    require(traversal_denial(principal, path, dirs), path)  # before existence: hidden = missing
    doc, collection = await _entry(db, path)
    require(entry_denial(principal, path, doc, READ, dirs), path)
    return _view(path, doc, collection)


async def _written(db: AsyncDatabase[Document], path: str) -> dict[str, Any]:
    """The entry's metadata after a change, for its writer (w is what writing needs)."""
    doc, collection = await _entry(db, path)
    return _view(path, doc, collection)


def _view(path: str, doc: Document, collection: AsyncCollection[Document]) -> dict[str, Any]:
    return {"path": path, "type": "directory" if collection.name == DIRECTORIES else "file",
            "own": doc.get("meta") or {}, "effective": doc.get(EFFECTIVE) or {}, "origin": doc.get(ORIGIN) or {}}


async def _writable(
    db: AsyncDatabase[Document], principal: Principal, path: str
) -> tuple[Document, AsyncCollection[Document], dict[str, Document]]:
    dirs = await fetch_directories(db, ancestors(path))
    require(traversal_denial(principal, path, dirs), path)  # before existence: hidden = missing
    doc, collection = await _entry(db, path)
    require(entry_denial(principal, path, doc, WRITE, dirs), path)
    return doc, collection, dirs


def _as_checked(doc: Document) -> dict[str, Any]:
    """A write's guard that the entry's owner, group and mode are still those its permission was
    checked on: a chmod or chown that returned before the write lands refuses it (read again)."""
    return {field: doc.get(field) for field in PERMISSION_FIELDS}


def _inherits(key: str, origins: Iterable[str | None]) -> dict[str, Any]:
    """Entries whose `key` comes from one of `origins` (None: from nowhere)."""
    origins = list(origins)
    alternatives: list[dict[str, Any]] = [{f"{ORIGIN}.{key}": {"$in": [o for o in origins if o is not None]}}]
    if None in origins:
        alternatives.append({f"{ORIGIN}.{key}": {"$exists": False}})
    return {"$or": alternatives}


def _below(path: str, leaving_out: Iterable[str]) -> list[dict[str, Any]]:
    """Clauses for the entries strictly below `path` but for the directories `leaving_out` and
    what is below them (`dir/` .. `dir0`, '0' following '/', is a directory's subtree)."""
    return [{"_id": {"$regex": descendant_pattern(path)}}, *(clause for d in leaving_out for clause in (
        {"_id": {"$ne": d}}, {"$or": [{"_id": {"$lt": d + "/"}}, {"_id": {"$gte": d + "0"}}]}))]


def _merged(updates: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for update in updates:
        for operator, fields in update.items():
            merged.setdefault(operator, {}).update(fields)
    return merged


async def _propagate(db: AsyncDatabase[Document], path: str, leaving_out: Iterable[str],
                     origins: Sequence[str | None], updates: Mapping[str, Mapping[str, Any]]) -> None:
    """Apply each key's update to the entries below `path` whose key comes from `origins`.

    One `update_many` per collection covers the entries where every key does (the usual case);
    then one read finds the entries where only some keys do (below a directory with values of
    its own), and they are updated grouped by which keys. So the subtree is scanned a fixed
    number of times however many keys one call carries (a scan per key let a single call of
    1000 keys hold the database for many minutes)."""
    below = _below(path, leaving_out)
    every = [_inherits(key, origins) for key in sorted(updates)]
    for name in (DIRECTORIES, FILES):
        await db[name].update_many({"$and": [*below, *every]}, _merged(updates.values()))
        if len(every) == 1:
            continue
        # Read to its end before writing (FerretDB's SQLite backend blocks writers behind a cursor).
        partial = await db[name].find({"$and": [*below, {"$or": every}, {"$nor": [{"$and": every}]}]},
                                      {f"{ORIGIN}.{key}": 1 for key in updates}).to_list()
        groups: dict[tuple[str, ...], list[str]] = {}
        for doc in partial:
            have = doc.get(ORIGIN) or {}
            keys = tuple(k for k in sorted(updates) if have.get(k) in origins)
            groups.setdefault(keys, []).append(doc["_id"])
        for keys, ids in groups.items():
            for start in range(0, len(ids), 10_000):
                await db[name].update_many(
                    {"$and": [{"_id": {"$in": ids[start:start + 10_000]}}, *(_inherits(k, origins) for k in keys)]},
                    _merged(updates[k] for k in keys))


def _other_vos_below(vos: dict[str, Vo], path: str) -> list[str]:
    """The roots of other VOs than `path`'s nested below it: a VO's namespace inherits nothing
    from another's directories above its root (`principal.foreign_roots` seen from `path`)."""
    own = vo_of_path(vos, path)
    return sorted(root for vo in vos.values() if vo.name != own for root in vo.roots
                  if root != path and is_within(root, path))


async def _set_within_bounds(db: AsyncDatabase[Document], principal: Principal, path: str,
                             typed: Mapping[str, Any], changes: Mapping[str, Any]
                             ) -> tuple[AsyncCollection[Document], int]:
    """Write `changes` on the entry if its own values with `typed` over them stay within the entry
    bounds, guarded by the VERSION it had when checked (read again and checked again if another
    call changed it meanwhile); returns the entry's collection and the VERSION written."""
    for _ in range(WRITE_TRIES):
        doc, collection, _ = await _writable(db, principal, path)
        check_entry_bounds(path, doc.get("meta") or {}, typed)
        with database_errors():
            written = await collection.update_one({"_id": path, VERSION: doc.get(VERSION), **_as_checked(doc)},
                                                  {"$set": dict(changes), "$inc": {VERSION: 1}})
        if written.matched_count:
            return collection, int(doc.get(VERSION) or 0) + 1
    raise Conflict(f"the metadata of {path} changed {WRITE_TRIES} times while this call was written; try again")


async def set_metadata(
    db: AsyncDatabase[Document], principal: Principal, path: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Set own values on a file or directory (validated against the declared types: a bad value
    rejects the call, nothing written); a directory's values reach everything below it that has
    no nearer value of its own."""
    if not values:
        raise InvalidInput("give at least one key and value")
    vos = await registry(db)
    typed = typed_values(values, types_for(await field_types(db), vo_of_path(vos, path)))
    changes: dict[str, Any] = {"modified": now()}
    for key, value in typed.items():
        changes.update({f"meta.{key}": value, f"{EFFECTIVE}.{key}": value, f"{ORIGIN}.{key}": path})
    collection, version = await _set_within_bounds(db, principal, path, typed, changes)
    with database_errors():
        if collection.name == DIRECTORIES:
            # Index: `_id` prefix range on MongoDB (the subtree), then the origin test.
            foreign = _other_vos_below(vos, path)
            await _propagate(db, path, foreign, _farther(path), {key: {"$set": {
                f"{EFFECTIVE}.{key}": value, f"{ORIGIN}.{key}": path}} for key, value in typed.items()})
            await _settle(db, path, foreign, sorted(typed), version)
    await change_feed.append(db, [change_feed.event("metadata_changed", path, keys=sorted(typed))])
    return await _written(db, path)


def _farther(path: str) -> list[str | None]:
    """The origins a directory's own value overrides below it: itself, farther up, or none."""
    return [*ancestors(path), path, None]


async def _settle(db: AsyncDatabase[Document], path: str, foreign: Sequence[str], keys: Sequence[str],
                  version: int) -> None:
    """After a set propagated its `keys` below the directory `path`: if another call changed the
    directory's own values since this one wrote them (its VERSION is no longer `version`), that
    call's propagation may have landed before this one's, leaving entries below with this call's
    values under the other's; so the directory's values of `keys` as they are now (or the
    fallback above, for a key removed since) are propagated again, until the VERSION stays put
    across a propagation. (The last call to change a directory thus leaves what it reads.)"""
    for _ in range(WRITE_TRIES):
        doc = await db[DIRECTORIES].find_one({"_id": path}, {"meta": 1, VERSION: 1})
        if doc is None or int(doc.get(VERSION) or 0) == version:
            return
        version = int(doc.get(VERSION) or 0)
        own = doc.get("meta") or {}
        updates = {key: {"$set": {f"{EFFECTIVE}.{key}": own[key], f"{ORIGIN}.{key}": path}}
                   for key in keys if key in own}
        if updates:
            await _propagate(db, path, foreign, _farther(path), updates)
        if gone := [key for key in keys if key not in own]:
            root = root_of(await registry(db), path)
            values, origins = inherited(path, await fetch_directories(db, ancestors(path)), root)
            await _propagate(db, path, foreign, [path], {key: _fallback(key, values, origins) for key in gone})
    raise Conflict(f"the metadata of {path} kept changing while this call propagated it; set it again")


def _fallback(key: str, values: Mapping[str, Any], origins: Mapping[str, str]) -> dict[str, Any]:
    """The update giving an entry the value of `key` from above (or none) once its origin's is gone."""
    if key in values:
        return {"$set": {f"{EFFECTIVE}.{key}": values[key], f"{ORIGIN}.{key}": origins[key]}}
    return {"$unset": {f"{EFFECTIVE}.{key}": "", f"{ORIGIN}.{key}": ""}}


async def remove_metadata(
    db: AsyncDatabase[Document], principal: Principal, path: str, keys: Iterable[str]
) -> dict[str, Any]:
    """Remove own values; the entry (and, for a directory, whatever inherited them) falls back
    to the value of the nearest directory above that has one, or to none."""
    wanted = [check_key(k) for k in keys]
    if not wanted:
        raise InvalidInput("give at least one key")
    foreign = _other_vos_below(await registry(db), path)
    collection, version, updates, given = await _remove_own(db, principal, path, wanted)
    with database_errors():
        if updates and collection.name == DIRECTORIES:
            await _propagate(db, path, foreign, [path], updates)
            await _settle(db, path, foreign, sorted(updates), version)
        if updates:
            await _follow_above(db, collection, path, foreign, given)
    await change_feed.append(db, [change_feed.event("metadata_changed", path, keys=sorted(wanted))])
    return await _written(db, path)


async def _remove_own(db: AsyncDatabase[Document], principal: Principal, path: str, wanted: Sequence[str]
                      ) -> tuple[AsyncCollection[Document], int, dict[str, dict[str, Any]],
                                 dict[str, tuple[Any, str | None]]]:
    """Unset the entry's own `wanted` keys, each falling back to the value above, guarded by the
    VERSION read (as a set is: a set landing between this read and write would otherwise have its
    value dropped without its propagation undone); returns the entry's collection, the VERSION
    written, the fallback update of each key removed and the value and origin it fell back to."""
    for _ in range(WRITE_TRIES):
        doc, collection, dirs = await _writable(db, principal, path)
        values, origins = inherited(path, dirs, root_of(await registry(db), path))
        own = doc.get("meta") or {}
        updates = {key: _fallback(key, values, origins) for key in wanted if key in own}
        write = _merged([*updates.values(), {"$set": {"modified": now()}}])
        if updates:
            write = _merged([write, {"$unset": {f"meta.{key}": "" for key in updates}}, {"$inc": {VERSION: 1}}])
        with database_errors():
            written = await collection.update_one({"_id": path, VERSION: doc.get(VERSION), **_as_checked(doc)}, write)
        if written.matched_count:
            return collection, int(doc.get(VERSION) or 0) + int(bool(updates)), updates, {
                key: (values.get(key), origins.get(key)) for key in updates}
    raise Conflict(f"the metadata of {path} changed {WRITE_TRIES} times while this call was written; try again")


async def _follow_above(db: AsyncDatabase[Document], collection: AsyncCollection[Document], path: str,
                        foreign: Sequence[str], given: Mapping[str, tuple[Any, str | None]]) -> None:
    """After the entry's own keys were removed, each falling back to the value above (`given`: the
    value and origin the entry, and for a directory its subtree, were given): a set of a directory
    above that landed between this call's read of the values above and its writes passed over the
    entry or its subtree (their values were the entry's own then), leaving them the value from
    before that set. So read what is above again and, while it differs from what the entry holds
    or its subtree was given, write it there: the entry guarded by its VERSION (a set of its own
    values since wins), the subtree where its values come through the entry."""
    given = dict(given)
    for _ in range(WRITE_TRIES):
        doc = await collection.find_one({"_id": path}, {"meta": 1, EFFECTIVE: 1, ORIGIN: 1, VERSION: 1})
        if doc is None:
            return
        root = root_of(await registry(db), path)
        values, origins = inherited(path, await fetch_directories(db, ancestors(path)), root)
        own, effective, origin = doc.get("meta") or {}, doc.get(EFFECTIVE) or {}, doc.get(ORIGIN) or {}
        above = {key: (values.get(key), origins.get(key)) for key in given if key not in own}
        entry = [key for key, now_above in above.items() if (effective.get(key), origin.get(key)) != now_above]
        below = [key for key, now_above in above.items() if given[key] != now_above]
        if entry and not (await collection.update_one({"_id": path, VERSION: doc.get(VERSION)}, _merged(
                _fallback(key, values, origins) for key in entry))).matched_count:
            continue
        if below and collection.name == DIRECTORIES:
            await _propagate(db, path, foreign, _farther(path), {key: _fallback(key, values, origins) for key in below})
        given.update({key: above[key] for key in below})
        if not entry and not below:
            return
    raise Conflict(f"the metadata above {path} kept changing while this call removed its values; remove them again")
