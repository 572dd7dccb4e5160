"""Replicas: the copies of a file on SEs, embedded in the file record (one per SE).

Each call costs O(1) round trips whatever the number of items: the files are fetched with one
`_id $in` and changed with one unordered bulk write whose filters guard against races (a
`$push` only when the file's `version` is still the one read; a status change only from the
status read), so no transaction is needed. Every replica change bumps the file's `version`.
Adds and removals carry their call's token, by which a write that partly missed counts its own
replicas on the SEs' usage and no other call's (`catalogue.replica_writers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, overwrite_counts, usage_claims
from catalogue.directories import now
from catalogue.directory_moves import BELOW_A_MOVE, carried_or_moving
from catalogue.file_models import REPLICA_STATUSES, Outcome, ReplicaIn, ReplicaRecord
from catalogue.files import (
    FILES,
    authorized_files,
    fetch_files,
    replica_documents,
)
from catalogue.lfn import check_lfn
from catalogue.permissions import PERMISSION_FIELDS, WRITE
from catalogue.registration_settling import settled
from catalogue.replica_pulls import pull_replicas
from catalogue.replica_pushes import push_replicas, set_back
from catalogue.replica_removal import REMOVAL, ReplicaBeingRemoved, being_removed
from catalogue.replica_writers import OVERWRITTEN, REPLICA_WRITERS, new_token, own_writes, writer_field
from catalogue.storage_elements import SES
from catalogue.usage import REGISTERED_IN, WITHDRAWN
from catalogue.writer_tokens import FOUNDING, NOT_HELD, UNDOING, WRITER
from kernel.db import Document, bulk_write_chunked, database_errors, increment
from kernel.errors import Conflict, InvalidInput
from kernel.principal import Principal


def _checked(items: Iterable[Mapping[str, Any]], *, with_replica: bool) -> list[tuple[str, ReplicaIn]]:
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"replica #{index} must be an object with lfn and se")
        lfn = check_lfn(item.get("lfn"))
        rest = {k: v for k, v in item.items() if k != "lfn"}
        if not with_replica:
            rest = {"se": rest.get("se")}
        try:
            out.append((lfn, ReplicaIn.model_validate(rest)))
        except ValueError as exc:
            raise InvalidInput(f"replica #{index} ({lfn}): {exc}") from exc
    return out


async def get_replicas(db: AsyncDatabase[Document], lfns: Sequence[str]) -> tuple[dict[str, Document], dict[str, str]]:
    """File records (with replicas) of the LFNs found, and `{lfn: reason}` for the others."""
    for lfn in lfns:
        check_lfn(lfn)
    found = await fetch_files(db, lfns)
    failed = {lfn: "no such file" for lfn in lfns if lfn not in found}
    return found, failed


async def active_replicas(
    db: AsyncDatabase[Document], lfns: Sequence[str]
) -> tuple[dict[str, Document], dict[str, str]]:
    """Like `get_replicas`, keeping only replicas that are available on a read-enabled SE.

    A file found with no such replica is reported as failed ("no active replica").
    """
    found, failed = await get_replicas(db, lfns)
    active, inactive = await only_active(db, found)
    return active, failed | inactive


async def only_active(
    db: AsyncDatabase[Document], found: Mapping[str, Document]
) -> tuple[dict[str, Document], dict[str, str]]:
    """File records cut down to their active replicas (one query for the SEs' read switches);
    files left with none come back as failed ("no active replica")."""
    ses = {r["se"] for doc in found.values() for r in doc.get("replicas", [])}
    readable: set[str] = set()
    if ses:
        with database_errors():
            cursor = db[SES].find({"_id": {"$in": sorted(ses)}, "read_enabled": True}, {"_id": 1})
            readable = {d["_id"] for d in await cursor.to_list()}
    active: dict[str, Document] = {}
    failed: dict[str, str] = {}
    for lfn, doc in found.items():
        kept = [r for r in doc.get("replicas", []) if r.get("status") == "available" and r["se"] in readable]
        if kept:
            active[lfn] = {**doc, "replicas": kept}
        else:
            failed[lfn] = "no active replica"
    return active, failed


async def add_replicas(db: AsyncDatabase[Document], items: Iterable[Mapping[str, Any]],
                       principal: Principal | None = None) -> Outcome:
    """Add replicas `{lfn, se, url?, status?}`; one already on that SE counts as success.

    Answers `{"successful": {lfn: [se, ...]}, "failed": {lfn: reason}}`. Unknown SEs (for a
    caller's `principal`, also SEs its VO does not use) and bad LFNs reject the whole call
    (InvalidInput) before anything is written. A caller's replicas go only on files it may write
    (w), judged again once they are in (`_judged_again`).
    """
    pairs = _checked(items, with_replica=True)
    docs = await replica_documents(db, pairs, principal)
    lfns = list(dict.fromkeys(lfn for lfn, _ in pairs))
    fields = {"replicas.se": 1, "version": 1, "size": 1, "guid": 1, REGISTERED_IN: 1, WITHDRAWN: 1}
    denied: dict[str, str] = {}
    if principal is None:
        found = await fetch_files(db, lfns, fields)
    else:
        fields |= dict.fromkeys(PERMISSION_FIELDS, 1)
        found, denied = await authorized_files(db, principal, lfns, WRITE, fields)
    # A file its register call is still settling may be given up (deleted, uncounted) just after.
    found = await settled(db, found)
    successful: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    wanted: dict[str, list[ReplicaRecord]] = {}
    for lfn, replica in pairs:
        if lfn not in found:
            failed[lfn] = denied.get(lfn, "no such file")
            continue
        successful.setdefault(lfn, []).append(replica.se)
        wanted.setdefault(lfn, []).append(docs[id(replica)])
    refused: dict[tuple[str, str], str] = {}
    added = await push_replicas(db, wanted, known=found, refused=refused)
    if principal is not None:
        refused.update(await _judged_again(db, principal, added))
    for lfn, se in refused:
        successful[lfn].remove(se)
        if not successful[lfn]:
            del successful[lfn]
        failed[lfn] = f"replica on SE {se} not added: {refused[(lfn, se)]}"
    return {"successful": successful, "failed": failed}


async def _judged_again(db: AsyncDatabase[Document], principal: Principal, added: Sequence[tuple[str, str]]
                        ) -> dict[tuple[str, str], str]:
    """Of the replicas a caller's call just `added`, those it takes back off their files because
    the caller may no longer write them as the files and directories stand now, with why: a chmod
    or chown of the file or of a directory above it, returned before the replica landed, refuses
    it as it refuses a call checked after it (the check and the push are two writes apart). Two
    reads (the files' permission fields, their ancestors)."""
    if not added:
        return {}
    _, denied = await authorized_files(db, principal, sorted({lfn for lfn, _ in added}), WRITE,
                                       dict.fromkeys(PERMISSION_FIELDS, 1))
    taken = [(lfn, se) for lfn, se in added if lfn in denied]
    if taken:
        await pull_replicas(db, taken)
    return {(lfn, se): denied[lfn] for lfn, se in taken}


async def remove_replicas(db: AsyncDatabase[Document], items: Iterable[Mapping[str, Any]]) -> Outcome:
    """Remove replicas `{lfn, se}` from the catalogue (the bytes are the reaper's business).

    Removing a replica that is not there succeeds; a missing file fails.
    """
    pairs = [(lfn, replica.se) for lfn, replica in _checked(items, with_replica=False)]
    found = await pull_replicas(db, pairs)
    successful: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    for lfn, se in pairs:
        if lfn in found:
            successful.setdefault(lfn, []).append(se)
        else:
            failed[lfn] = "no such file"
    return {"successful": successful, "failed": failed}


async def set_status_if_unchanged(db: AsyncDatabase[Document], lfn: str, se: str, index: int, version: Any,
                                  status: str) -> bool:
    """Set the status of the replica at position `index` (on `se`) only if the file's `version`
    is still the one read: for a decision taken on all of a file's replicas (e.g. "not its last
    available copy"), which a concurrent change of any replica must invalidate."""
    at = now()
    with database_errors():
        result = await db[FILES].update_one(
            {"_id": lfn, "version": version, f"replicas.{index}.se": se}, _status_update(index, status, at))
    if result.matched_count == 1:
        await change_feed.append(db, [change_feed.event("replica_status", lfn, se=se, status=status)])
    return result.matched_count == 1


async def overwrite_files(db: AsyncDatabase[Document], changes: Mapping[str, Document], *,
                          guard: Mapping[str, Document] | None = None) -> set[str]:
    """Replace the content of existing files (`{lfn: {size, adler32, replicas, ...fields}}`, e.g.
    a job's output written again by a later attempt): one bulk write guarded by each file's
    `version` (and `guard[lfn]`), bumping it, and one usage write moving the old size and
    replicas out and the new ones in, noted before the write (`catalogue.overwrite_counts`: a
    server killed in between leaves the count to the sweep). Returns the LFNs overwritten (a file
    that changed meanwhile is read again, up to a few times); the updates carry the round's
    token, by which a write that partly missed finds its own (`catalogue.replica_writers`)."""
    done: set[str] = set()
    pending = dict(changes)
    for _ in range(5):
        found = await fetch_files(db, list(pending), {"replicas.se": 1, "size": 1, "version": 1})
        planned = [lfn for lfn in pending if lfn in found]
        if not planned:
            break
        token = new_token()
        plans = {lfn: overwrite_counts.planned(lfn, found[lfn], pending[lfn]) for lfn in planned}
        noted = overwrite_counts.noted_keys(plans.values())
        await usage_claims.intend(db, token, noted, kind=overwrite_counts.KIND, counting=list(plans.values()))
        at = now()
        mark = {"modified": at, writer_field(None, OVERWRITTEN): token}
        updates = [UpdateOne({"_id": lfn, "version": found[lfn].get("version"), **(guard or {}).get(lfn, {})},
                             {"$set": {**pending[lfn], **mark}, **increment({"version": 1})}) for lfn in planned]
        with database_errors():
            result = await bulk_write_chunked(db[FILES], updates)
        written = planned
        if result.modified_count != len(updates):  # some guard missed: find which were written
            now_found = await fetch_files(db, planned, {REPLICA_WRITERS: 1})
            written = [lfn for lfn, _ in own_writes(now_found, [(lfn, None) for lfn in planned], OVERWRITTEN, token,
                                                     result.modified_count)]
        await usage_claims.settle(db, token, noted, overwrite_counts.totals(plans[lfn] for lfn in written), keep=False)
        await change_feed.append(db, [
            *(change_feed.event("replica_removed", lfn, se=r["se"]) for lfn in written
              for r in found[lfn].get("replicas") or []),
            *(change_feed.event("replica_added", lfn, se=r["se"]) for lfn in written
              for r in pending[lfn].get("replicas") or [])])
        done.update(written)
        pending = {lfn: pending[lfn] for lfn in planned if lfn not in done}
        if not pending:
            break
    return done


def _status_update(index: int, status: str, at: Any, *, undoing: bool = False) -> Document:
    """The update setting the replica at `index` to status; one made `available` founds its
    record no more (`writer_tokens.FOUNDING`): an upload that later takes it over and fails
    (after it went bad and a copy to it began again) leaves the record, its owner and metadata.
    `undoing`: an upload's undo claims it (`writer_tokens.UNDOING` set); any other change takes
    that mark off."""
    fields = {f"replicas.{index}.status": status, f"replicas.{index}.modified": at, "modified": at}
    if undoing:
        fields[f"replicas.{index}.{UNDOING}"] = at
    update: Document = {"$set": fields, **increment({"version": 1})}
    gone = ([] if undoing else [UNDOING]) + ([FOUNDING] if status == "available" else [])
    if gone:
        update["$unset"] = {f"replicas.{index}.{field}": "" for field in gone}
    return update


def _undoing(status: str, expected: str | None, writer: str | None) -> bool:
    """Whether a status change is an upload's undo claiming its replica (`dataio.upload_undo`)."""
    return status == "unavailable" and expected == "copying" and writer is not None


async def set_replica_status(
    db: AsyncDatabase[Document], lfn: str, se: str, status: str, *, expected: str | None = None,
    unless_removing: bool = False, writer: str | None = None, judged: Mapping[str, Any] | None = None,
) -> bool:
    """Atomically set the status of the replica of `lfn` on `se`; with `expected`, only if the
    replica is in that status now; with `writer` (a digest), only if that upload holds it
    (`catalogue.upload_leases`). True when the replica was changed. `unless_removing`: raise
    ReplicaBeingRemoved for a replica a deletion is at work on (`replica_removal.being_removed`).
    `judged`: the file's owner, group and mode as a caller's permission was checked on; a chmod
    or chown since (returned before the write lands) makes it False."""
    check_lfn(lfn)
    for value in (status, expected):
        if value is not None and value not in REPLICA_STATUSES:
            raise InvalidInput(f"replica status {value!r} is not one of {', '.join(REPLICA_STATUSES)}")
    # Atomic compare-and-set on the element's position: the filter pins the SE and the status
    # read, so a concurrent change (or a shifted array) makes it miss and we read again.
    # (No `$elemMatch` or positional `$` here: FerretDB 1.24 supports neither in updates.)
    for _ in range(5):
        with database_errors():
            doc = await db[FILES].find_one({"_id": lfn}, {"replicas": 1, **dict.fromkeys(PERMISSION_FIELDS, 1)})
        found = [(i, r) for i, r in enumerate((doc or {}).get("replicas", [])) if r.get("se") == se]
        if not found or (judged is not None and any((doc or {}).get(f) != judged.get(f) for f in PERMISSION_FIELDS)):
            return False
        index, current = found[0]
        if expected is not None and current.get("status") != expected:
            return False
        if writer is not None and current.get(WRITER) != writer:
            return False
        at = now()
        guard = {"_id": lfn, f"replicas.{index}.se": se, f"replicas.{index}.status": current.get("status"),
                 **({} if judged is None else {f: judged.get(f) for f in PERMISSION_FIELDS})}
        if writer is not None:
            guard[f"replicas.{index}.{WRITER}"] = writer
        if unless_removing:
            if being_removed(current, at):
                raise ReplicaBeingRemoved(f"{lfn} on SE {se}: a deletion is removing this replica; it may be "
                                          "written again once it is gone")
            guard[f"replicas.{index}.{REMOVAL}"] = current.get(REMOVAL)  # as read: a retirement since misses
        with database_errors():
            result = await db[FILES].update_one(guard, _status_update(index, status, at,
                                                                      undoing=_undoing(status, expected, writer)))
        if result.matched_count == 1:
            await change_feed.append(db, [change_feed.event("replica_status", lfn, se=se, status=status)])
            return True
    return False


async def copying_again(db: AsyncDatabase[Document], lfn: str, se: str, was: str, guid: str | None) -> bool:
    """Set a replica left `was` (bad, unavailable, lost) by an earlier attempt `copying` again for a
    writer; False if it is no longer `was`. Its writer finishes it by this LFN, so it looks for a
    directory move after the write, as a push does (`catalogue.replica_pushes`): one that holds or
    took a directory above the file sets it back to `was` where the file now is (by its `guid`),
    and the writer gets Conflict (BELOW_A_MOVE). A replica a deletion is at work on is not taken
    (ReplicaBeingRemoved): the deleter would delete the new bytes at its path."""
    if not await set_replica_status(db, lfn, se, "copying", expected=was, unless_removing=True):
        return False
    if guid and await carried_or_moving(db, [lfn]):
        await set_back(db, guid, se, was)
        raise Conflict(f"{lfn} on SE {se}: {BELOW_A_MOVE}")
    return True


async def set_replica_statuses(
    db: AsyncDatabase[Document], items: Sequence[Mapping[str, Any]], files: Mapping[str, Document], *,
    as_judged: bool = False,
) -> Outcome:
    """Set the status of many replicas `{lfn, se, status, expected?}` (one per LFN), each only
    from `expected` when given; `files` are the records as just read (`authorized_files`).

    Guarded like `set_replica_status` (the element's position, SE and status as read), in one
    `update_many` per (position, SE, status read, status wanted): usually one for a whole
    batch, as an upload's replicas all go from `copying` to `available` on one SE. (FerretDB
    scans the collection for any filter but `{_id: x}`, so one guarded update per file would
    cost a scan per file.) Only when some guard missed (a concurrent change) are the files read
    again and the missed ones retried one by one. Answers {lfn: status} or {lfn: reason}.
    `as_judged`: each write also guarded by its file's owner, group and mode as in `files` (a
    caller's permission was checked on them: a chmod or chown since makes it miss).
    """
    successful: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    groups: dict[tuple[int, str, Any, str, str | None, tuple[Any, ...]], list[str]] = {}
    planned: list[tuple[Mapping[str, Any], int]] = []
    at = now()
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored (BSON keeps milliseconds)
    for item in items:
        lfn, se, expected = item["lfn"], item["se"], item.get("expected")
        found = [(i, r) for i, r in enumerate(files[lfn].get("replicas", [])) if r.get("se") == se]
        if not found:
            failed[lfn] = f"{lfn} has no replica on {se}"
            continue
        index, current = found[0]
        if expected is not None and current.get("status") != expected:
            failed[lfn] = f"replica of {lfn} on {se} is {current.get('status')!r}, not {expected!r}"
            continue
        if item.get("writer") is not None and current.get(WRITER) != item["writer"]:
            failed[lfn] = f"replica of {lfn} on {se} is not this upload's any more: {NOT_HELD}"
            continue
        planned.append((item, index))
        perms = tuple(files[lfn].get(f) for f in PERMISSION_FIELDS) if as_judged else ()
        groups.setdefault((index, se, current.get("status"), item["status"], item.get("writer"), perms), []).append(lfn)
    if not planned:
        return {"successful": successful, "failed": failed}
    updates = [
        UpdateMany({"_id": {"$in": lfns}, f"replicas.{index}.se": se, f"replicas.{index}.status": current,
                    **({} if writer is None else {f"replicas.{index}.{WRITER}": writer}),
                    **dict(zip(PERMISSION_FIELDS, perms, strict=False))},
                   _status_update(index, status, at, undoing=_undoing(status, current, writer)))
        for (index, se, current, status, writer, perms), lfns in groups.items()
    ]
    result = await bulk_write_chunked(db[FILES], updates)
    if result.modified_count == len(planned):
        successful.update({item["lfn"]: item["status"] for item, _ in planned})
        await change_feed.append(db, [change_feed.event("replica_status", item["lfn"], se=item["se"],
                                                        status=item["status"]) for item, _ in planned])
        return {"successful": successful, "failed": failed}
    now_files = await fetch_files(db, [item["lfn"] for item, _ in planned], {"replicas": 1})
    events = []
    for item, index in planned:
        lfn = item["lfn"]
        replicas = now_files.get(lfn, {}).get("replicas", [])
        mine = replicas[index] if index < len(replicas) else {}
        applied = mine.get("se") == item["se"] and mine.get("status") == item["status"] and mine.get("modified") == at
        if applied:
            events.append(change_feed.event("replica_status", lfn, se=item["se"], status=item["status"]))
        judged = {f: files[lfn].get(f) for f in PERMISSION_FIELDS} if as_judged else None
        if applied or await set_replica_status(db, lfn, item["se"], item["status"], expected=item.get("expected"),
                                               writer=item.get("writer"), judged=judged):
            successful[lfn] = item["status"]
        else:
            failed[lfn] = f"replica of {lfn} on {item['se']} changed meanwhile; it is not {item.get('expected')!r}"
    await change_feed.append(db, events)
    return {"successful": successful, "failed": failed}
