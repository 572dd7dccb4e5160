"""What datasets and containers hold: files attached to datasets, children of containers.

Membership is referenced, never embedded (a dataset may hold millions of files):
- `dataset_files`: `_id` `<did>#<lfn>` with `did`, `lfn`, `size` (`#` occurs in neither);
  listing is the index range `(did, lfn)`, paged by `after` or streamed;
- `container_children`: `_id` `<container>#<child>` with `container` and `child`.

A dataset's `files` and `bytes`, and a container's `children`, count each row once whoever
races: an attach charges the DID for its rows first (guarded by `state: open`), inserts them,
gives back those that were there already (`_counted_insert`) and takes them back out if a close
or freeze landed meanwhile; a file detach marks the rows no other call is detaching
(`detaching`, `kernel.marks`), reads back its own, deletes them by its mark and takes off what it
read (`_marked_delete`, for a container's children too), then puts them back if a close or
freeze landed meanwhile (`_put_back_if_closed`), and those the caller can no longer reach.
A call cut short can leave a DID counting rows it does not hold, never the other way, until the
transfer workers' sweep recounts it from the rows (each call holds a claim on the DID while it
writes: `catalogue.dataset_count_claims`); `cairn dataset rebuild-counts` (`catalogue.dataset_recount`)
recounts every DID. An attach looks, after its rows are in,
for its files being moved or removed (`catalogue.directory_moves.leaving`; a move looks for rows
after its mark) and takes those rows back out: no row names an LFN its file left; and for files
its caller may no longer read (a chmod or chown that returned before its rows landed).
Attaching a container to a container refuses cycles: the child's descendants are walked one
`$in` query per level before the link is written, and again after (`_no_cycle_made`): two
concurrent attaches that together close a cycle each see the other's link then.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue import change_feed
from catalogue.collection_names import CONTAINER_CHILDREN
from catalogue.dataset_count_claims import counting
from catalogue.dataset_counts import add_counts
from catalogue.datasets import DATASETS, check_did, get_did, writable_did
from catalogue.directories import DUPLICATE_KEY, find_by_ids
from catalogue.directory_moves import leaving
from catalogue.files import authorized_files, fetch_files
from catalogue.lfn import check_lfn
from catalogue.permissions import PERMISSION_FIELDS, READ
from kernel.db import INDEX_ORDER, Document, IndexSpec, database_errors, find_by_values, iterate
from kernel.errors import Conflict, InvalidInput, NotFound
from kernel.marks import Mark, by_ids
from kernel.principal import Principal

DATASET_FILES = "dataset_files"
LEFT = "the file was being moved or removed while it was attached; nothing attached, try again"
# A dataset file row's mark while one detach call removes it (`kernel.marks`).
DETACHING = "detaching"
DETACH_LEASE = dt.timedelta(minutes=2)
MAX_CONTAINER_DEPTH = 64
Tally = Callable[[Sequence[Document]], dict[str, int]]  # what member rows add to their DID's counts
log = logging.getLogger(__name__)

INDEXES = [
    # a dataset's files in order: dataset_files.find({did: d, lfn: {$gt: after}}).sort(lfn) under
    # INDEX_ORDER (pages, streams, rule evaluation, refresh; made on the embedded database too:
    # without it every page read the rows of every dataset and sorted this one's, 0.6-0.8 s a page
    # at 100k rows)
    IndexSpec(DATASET_FILES, [("did", 1), ("lfn", 1)], name="dataset_files_by_did_lfn", index_order=True),
    # is a file (or one below a directory) in a dataset: a move's look, `catalogue.moves`,
    # dataset_files.find_one({lfn: l or {$gt, $lt}}) under INDEX_ORDER (made on the embedded
    # database too: without it the look scanned every row, 84 ms per 100k rows for each move)
    IndexSpec(DATASET_FILES, [("lfn", 1)], name="dataset_files_by_lfn", index_order=True),
    # a container's children in order (pages, streams), under INDEX_ORDER: made on the embedded
    # database too, like the dataset's files above
    IndexSpec(CONTAINER_CHILDREN, [("container", 1), ("child", 1)], name="container_children_by_container",
              index_order=True),
    # the containers holding a DID (the walks up: a rule's triggers, on every attach; cycle checks),
    # one indexed `$in` under INDEX_ORDER on the embedded database too (`find_by_values`)
    IndexSpec(CONTAINER_CHILDREN, [("child", 1)], name="container_children_by_child", index_order=True),
]


def row_id(did: str, member: str) -> str:
    return f"{did}#{member}"


async def _insert_rows(db: AsyncDatabase[Document], collection: str, rows: list[Document]) -> list[Document]:
    """Insert rows unordered; return those actually inserted (duplicates were there already)."""
    if not rows:
        return []
    duplicates: set[int] = set()
    try:
        with database_errors():
            await db[collection].insert_many(rows, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        duplicates = {e["index"] for e in errors}
    return [row for i, row in enumerate(rows) if i not in duplicates]


def _file_tally(rows: Sequence[Document]) -> dict[str, int]:
    return {"files": len(rows), "bytes": sum(int(r["size"]) for r in rows)}


def _child_tally(rows: Sequence[Document]) -> dict[str, int]:
    return {"children": len(rows)}


async def _counted_insert(db: AsyncDatabase[Document], did: str, collection: str, rows: list[Document],
                          tally: Tally) -> list[Document]:
    """Insert a DID's member rows and count them (`tally`): the DID is charged for every row first
    (guarded by `state: open`: a closed one refuses before anything is written), then the rows go
    in and those that were there already are given back, so a call cut short between the two
    leaves the dataset counting rows it may not hold (mended by `cairn dataset rebuild-counts`),
    never holding rows it does not count, and a retry counts each row once. A close that lands
    while the rows go in takes them back out. Returns the rows inserted."""
    if not rows:
        return []
    if not await add_counts(db, did, tally(rows), open_only=True):
        raise Conflict(f"{did} is not open; nothing attached")
    inserted = await _insert_rows(db, collection, rows)
    kept = {r["_id"] for r in inserted}
    back = [r for r in rows if r["_id"] not in kept]
    with database_errors():
        closed = (await db[DATASETS].find_one({"_id": did}, {"state": 1}) or {}).get("state") != "open"
        if closed:
            await db[collection].delete_many({"_id": {"$in": sorted(kept)}})
            back = rows
    if back:
        await add_counts(db, did, {k: -n for k, n in tally(back).items()})
    if closed:
        raise Conflict(f"{did} was closed or frozen meanwhile; nothing attached")
    return inserted


async def delete_rows(db: AsyncDatabase[Document], ids: list[str]) -> None:
    if ids:
        with database_errors():
            await db[DATASET_FILES].delete_many({"_id": {"$in": ids}})
        await _members_changed(db, "detached", [_split_row_id(i) for i in ids])


async def attach_rows(db: AsyncDatabase[Document], rows: list[Document]) -> None:
    inserted = await _insert_rows(db, DATASET_FILES, rows)
    await _members_changed(db, "attached", [(r["did"], r["lfn"]) for r in inserted])


def _split_row_id(row_id: str) -> tuple[str, str]:
    did, _, member = row_id.partition("#")
    return did, member


async def _members_changed(db: AsyncDatabase[Document], kind: change_feed.Kind,
                           pairs: Sequence[tuple[str, str]]) -> None:
    """Append the change feed events of members attached to or detached from their DIDs (the
    rule daemons re-evaluate the rules on those DIDs and the containers above them)."""
    await change_feed.append(db, [change_feed.event(kind, did, member=member) for did, member in pairs])


async def attach_files(
    db: AsyncDatabase[Document], principal: Principal, did: str, lfns: Sequence[str]
) -> dict[str, Any]:
    """Attach files (the caller must be able to read each) to an open, non-dynamic dataset.

    Answers `{"successful": {lfn: {"attached": bool}}, "failed": {lfn: reason}}`; an LFN that
    was attached already succeeds with `attached: false`.
    """
    doc = await writable_did(db, principal, did, "dataset")
    if doc.get("query") is not None:
        raise InvalidInput(f"{did} is dynamic: its contents come from its query (refresh it instead)")
    allowed, failed = await authorized_files(db, principal, list(dict.fromkeys(lfns)), READ)
    rows = [{"_id": row_id(did, lfn), "did": did, "lfn": lfn, "size": int(f.get("size", 0))}
            for lfn, f in allowed.items()]
    async with counting(db, did):
        inserted = await _counted_insert(db, did, DATASET_FILES, rows, _file_tally)
        gone = await leaving(db, [r["lfn"] for r in inserted])
        denied = await _unreadable_now(db, principal, [r["lfn"] for r in inserted if r["lfn"] not in gone])
        if taken := gone | set(denied):
            # Moved or removed while attached (the row would name an LFN the file left), or no longer
            # readable to the caller: taken back out (and off the counts) the way a detach does, so a
            # detach racing it counts once.
            await _marked_delete(db, did, DATASET_FILES, [row_id(did, lfn) for lfn in sorted(taken)], _file_tally)
            inserted = [r for r in inserted if r["lfn"] not in taken]
            failed.update(dict.fromkeys(sorted(gone), LEFT))
            failed.update(denied)
            allowed = {lfn: f for lfn, f in allowed.items() if lfn not in taken}
    if inserted:
        await _members_changed(db, "attached", [(did, r["lfn"]) for r in inserted])
    new = {r["lfn"] for r in inserted}
    return {"successful": {lfn: {"attached": lfn in new} for lfn in allowed}, "failed": failed}


async def _unreadable_now(db: AsyncDatabase[Document], principal: Principal, lfns: list[str]) -> dict[str, str]:
    """Of the files an attach just put in, those the caller may no longer read as the files and
    directories stand now, with why: a chmod or chown of the file or of a directory above it,
    returned before the row landed, refuses it as it refuses an attach checked after it (the check
    and the insert are writes apart). Two reads (the files' permission fields, their ancestors)."""
    if principal.is_global_admin or not lfns:
        return {}
    _, denied = await authorized_files(db, principal, lfns, READ, dict.fromkeys(PERMISSION_FIELDS, 1))
    return denied


async def detach_files(
    db: AsyncDatabase[Document], principal: Principal, did: str, lfns: Sequence[str]
) -> dict[str, Any]:
    """Detach files from an open, non-dynamic dataset; an LFN that is not in it fails, and so does
    a file the caller cannot reach (hidden = not attached, as the contents show it; it stays)."""
    doc = await writable_did(db, principal, did, "dataset")
    if doc.get("query") is not None:
        raise InvalidInput(f"{did} is dynamic: its contents come from its query (refresh it instead)")
    wanted = list(dict.fromkeys(lfns))
    hidden = await refused_existing(db, principal, wanted, 0)
    rows = [row_id(did, lfn) for lfn in wanted if lfn not in hidden]
    async with counting(db, did):
        present, mine = await _marked_delete(db, did, DATASET_FILES, rows, _file_tally)
        await _put_back_if_closed(db, did, DATASET_FILES, mine, _file_tally)
        # Judged again once deleted: a chmod or chown above a file that hid it from the caller and
        # returned before the delete landed refuses it as a detach checked after it (hidden = not in).
        if hidden_now := await refused_existing(db, principal, [row["lfn"] for row in mine], 0):
            await _put_back(db, did, DATASET_FILES, [row for row in mine if row["lfn"] in hidden_now], _file_tally)
            present = [row for row in present if row["lfn"] not in hidden_now]
            mine = [row for row in mine if row["lfn"] not in hidden_now]
    lfns_present = {row["lfn"] for row in present}
    detached = {row["lfn"] for row in mine}
    await _members_changed(db, "detached", [(did, lfn) for lfn in sorted(detached)])
    return {"successful": {lfn: {"detached": lfn in detached} for lfn in wanted if lfn in lfns_present},
            "failed": {lfn: f"not in {did}" for lfn in wanted if lfn not in lfns_present}}


async def _put_back_if_closed(db: AsyncDatabase[Document], did: str, collection: str, rows: list[Document],
                              tally: Tally) -> None:
    """After a detach deleted `rows`: if a close or freeze landed meanwhile, insert them again
    and count them back (409, nothing detached), as an attach takes its rows back out."""
    if not rows:
        return
    with database_errors():
        if (await db[DATASETS].find_one({"_id": did}, {"state": 1}) or {}).get("state") == "open":
            return
    await _put_back(db, did, collection, rows, tally)
    raise Conflict(f"{did} was closed or frozen meanwhile; nothing detached")


async def _put_back(db: AsyncDatabase[Document], did: str, collection: str, rows: list[Document],
                    tally: Tally) -> None:
    """Insert rows a detach deleted again and count those that went in back."""
    back = await _insert_rows(db, collection, [{k: v for k, v in r.items() if k != DETACHING} for r in rows])
    if back:
        await add_counts(db, did, tally(back))


async def refused_existing(db: AsyncDatabase[Document], principal: Principal, lfns: list[str],
                            need: int) -> set[str]:
    """The LFNs whose files exist but that the caller cannot reach (`need` 0) or may not read
    (READ: its queries leave them out). A row whose file was removed is in neither: its dataset's
    writers may still detach it."""
    if principal.is_global_admin or not lfns:
        return set()
    _, refused = await authorized_files(db, principal, lfns, need)
    return set(await fetch_files(db, list(refused), {"_id": 1})) if refused else set()


async def _marked_delete(db: AsyncDatabase[Document], did: str, collection: str, ids: list[str], tally: Tally
                         ) -> tuple[list[Document], list[Document]]:
    """Delete the member rows of ids that no other call is detaching and take them off the DID's
    counts (`tally`): mark them (`kernel.marks`), read back, delete by the mark, count what was
    read. Returns the rows found, and those this call detached."""
    mark = Mark(DETACHING, DETACH_LEASE)
    with database_errors():
        for flt in by_ids(ids, mark.free()):
            await db[collection].update_many(flt, {"$set": {DETACHING: mark.value()}})
    found = list((await find_by_ids(db[collection], ids)).values())
    mine = [row for row in found if mark.holds(row)]
    mine_ids = sorted(row["_id"] for row in mine)
    try:
        deleted = await mark.delete(db[collection], mine_ids, "the detach")
    except BaseException:
        await asyncio.shield(mark.take_off(db[collection], mine_ids))
        raise
    if deleted != len(mine):  # a call that took lapsed marks over deleted some first
        log.warning("a detach from %s deleted %d of the %d rows it marked: it cannot tell which and counts "
                    "none (`cairn dataset rebuild-counts` mends it)", did, deleted, len(mine))
        return found, []
    if mine:
        await add_counts(db, did, {k: -n for k, n in tally(mine).items()})
    return found, mine


async def linked_dids(db: AsyncDatabase[Document], starts: Iterable[str], *, down: bool) -> tuple[set[str], bool]:
    """The DIDs reachable from `starts` through container links, downwards (their children, and
    theirs...) or upwards (the containers holding them, and theirs...), one query per level;
    and whether the walk ended within MAX_CONTAINER_DEPTH levels. The one container walk."""
    near, far = ("container", "child") if down else ("child", "container")
    seen: set[str] = set()
    level = set(starts)
    for _ in range(MAX_CONTAINER_DEPTH):
        # Index: container_children_by_container (down) or container_children_by_child (up).
        links = await find_by_values(db[CONTAINER_CHILDREN], near, level, {far: 1})
        level = {link[far] for link in links} - seen
        if not level:
            return seen, True
        seen |= level
    return seen, False


async def _descendant_containers(db: AsyncDatabase[Document], start: str) -> set[str]:
    """Every DID reachable below `start` (Conflict when they nest too deep to tell)."""
    below, complete = await linked_dids(db, [start], down=True)
    if not complete:
        raise Conflict(f"containers below {start} nest deeper than {MAX_CONTAINER_DEPTH} levels")
    return below


async def attach_children(
    db: AsyncDatabase[Document], principal: Principal, container: str, children: Sequence[str]
) -> dict[str, Any]:
    """Attach datasets or containers to an open container; a child that would close a cycle
    (the container itself, or one of its ancestors) is refused with 409 and nothing written."""
    await writable_did(db, principal, container, "container")
    wanted = list(dict.fromkeys(children))
    for child in wanted:
        check_did(child)
    found = await find_by_ids(db[DATASETS], wanted, {"type": 1})
    missing = [c for c in wanted if c not in found]
    if missing:
        raise NotFound(f"DID(s) {', '.join(missing)} do not exist")
    for child in wanted:
        if child == container or (found[child]["type"] == "container"
                                  and container in await _descendant_containers(db, child)):
            raise Conflict(f"attaching {child} to {container} would make a cycle", details={"child": child})
    rows = [{"_id": row_id(container, c), "container": container, "child": c} for c in wanted]
    async with counting(db, container):
        inserted = await _counted_insert(db, container, CONTAINER_CHILDREN, rows, _child_tally)
        await _no_cycle_made(db, container, inserted, {c for c in wanted if found[c]["type"] == "container"})
    if inserted:
        await _members_changed(db, "attached", [(container, r["child"]) for r in inserted])
    new = {r["child"] for r in inserted}
    return {"successful": {c: {"attached": c in new} for c in wanted}, "failed": {}}


async def _no_cycle_made(db: AsyncDatabase[Document], container: str, rows: list[Document],
                         containers: set[str]) -> None:
    """Looks for cycles again once the links to container children are in: two attaches that
    together close one (A into B, B into A) each walked before the other's link was there. On a
    cycle (or a nesting too deep to tell) this call's links are taken back out, and off the
    counts, as a detach does (409): of the links of a cycle, the last one in sees it."""
    for row in rows:
        if row["child"] not in containers:
            continue  # a dataset holds no DIDs
        try:
            if container in await _descendant_containers(db, row["child"]):
                raise Conflict(f"attaching {row['child']} to {container} would make a cycle (another attach "
                               "closed it meanwhile); nothing attached", details={"child": row["child"]})
        except Conflict:
            await _marked_delete(db, container, CONTAINER_CHILDREN, sorted(r["_id"] for r in rows), _child_tally)
            raise


async def detach_children(
    db: AsyncDatabase[Document], principal: Principal, container: str, children: Sequence[str]
) -> dict[str, Any]:
    """Detach children from an open container."""
    await writable_did(db, principal, container, "container")
    wanted = list(dict.fromkeys(children))
    async with counting(db, container):
        present, mine = await _marked_delete(db, container, CONTAINER_CHILDREN,
                                             [row_id(container, c) for c in wanted], _child_tally)
        await _put_back_if_closed(db, container, CONTAINER_CHILDREN, mine, _child_tally)
    found = {row["child"] for row in present}
    detached = {row["child"] for row in mine}
    await _members_changed(db, "detached", [(container, child) for child in sorted(detached)])
    return {"successful": {c: {"detached": c in detached} for c in wanted if c in found},
            "failed": {c: f"not in {container}" for c in wanted if c not in found}}


async def open_contents(
    db: AsyncDatabase[Document], did: str, *, after: str | None = None, limit: int | None = None
) -> AsyncIterator[Document]:
    """Check the DID exists now, then return its members sorted: `{lfn, size}` rows of a
    dataset or `{did, type}` of a container's children."""
    doc = await get_did(db, did)
    if doc["type"] == "dataset":
        query: dict[str, Any] = {"did": did}
        if after is not None:  # an LFN (or a path between LFNs): what the index order assumes
            query["lfn"] = {"$gt": check_lfn(after)}
        # Index: dataset_files_by_did_lfn, in its order (a page reads its rows, a stream starts at once).
        cursor = db[DATASET_FILES].find(query, {"_id": 0, "lfn": 1, "size": 1}, comment=INDEX_ORDER).sort("lfn", 1)
    else:
        query = {"container": did}
        if after is not None:  # a DID: what the index order assumes
            check_did(after)
            query["child"] = {"$gt": after}
        cursor = db[CONTAINER_CHILDREN].find(query, {"_id": 0, "child": 1}, comment=INDEX_ORDER).sort("child", 1)
    if limit is not None:
        cursor = cursor.limit(limit)

    async def rows() -> AsyncIterator[Document]:
        async for row in iterate(cursor.batch_size(5000)):
            yield row if "lfn" in row else {"did": row["child"]}

    return rows()


async def file_lfns(db: AsyncDatabase[Document], did: str, *, limit: int) -> list[str]:
    """The LFNs a dataset holds, or a container holds through all its descendants, sorted and
    without repeats; InvalidInput as soon as there are more than `limit` (NotFound: no such DID)."""
    doc = await get_did(db, did)
    datasets = [did] if doc["type"] == "dataset" else sorted(await _descendant_containers(db, did))
    found: set[str] = set()
    # Container children are datasets or containers; only datasets have rows here. Index:
    # dataset_files_by_did_lfn, one DID at a time (a `$in` of them reads every row of every
    # dataset on the embedded database).
    for dataset in datasets:
        cursor = db[DATASET_FILES].find({"did": dataset}, {"_id": 0, "lfn": 1}, comment=INDEX_ORDER).batch_size(5000)
        async for row in iterate(cursor):
            found.add(row["lfn"])
            if len(found) > limit:
                raise InvalidInput(f"{did} holds more than {limit} files", details={"did": did, "limit": limit})
    return sorted(found)


async def list_page(db: AsyncDatabase[Document], did: str, *, after: str | None = None,
                    limit: int = 1000) -> dict[str, Any]:
    """One page of a DID's members: `{"members": [...], "next_after": key | None}`."""
    members = [m async for m in await open_contents(db, did, after=after, limit=limit + 1)]
    more = len(members) > limit
    members = members[:limit]
    key = "lfn" if members and "lfn" in members[0] else "did"
    return {"members": members, "next_after": members[-1][key] if more else None}
