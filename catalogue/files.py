"""File records: bulk registration with first replicas, lookup and removal.

`register_files` is idempotent and costs O(1) database round trips per batch however large:
one query for the SEs named, one `_id $in` for the directories involved, at most one query and
one insert for missing parent directories (mkdir -p), one unordered `insert_many` of the files,
only when ancestors are given, two queries to check them (`authorized_files`), and only when
some LFNs existed already, one query to compare them and one bulk update to add their new
replicas. The unique `_id` (the LFN) is what makes concurrent registrations safe.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from catalogue import change_feed, guid_holds, moved_paths, registration_counts, usage_claims
from catalogue.collection_names import FILES
from catalogue.directories import (
    DUPLICATE_KEY,
    directory_document,
    fetch_directories,
    find_by_ids,
    insert_directories,
    now,
)
from catalogue.directory_moves import BELOW_A_MOVE, below_moves, give_up_registered, looked_above
from catalogue.file_models import (
    FileIn,
    FileRecord,
    Outcome,
    ReplicaIn,
    ReplicaRecord,
    parse_files,
)
from catalogue.file_removal import remove_records, still_has_replicas
from catalogue.lfn import ancestors, check_lfn, name_of, parent_of
from catalogue.metadata import metadata_fields_for
from catalogue.metadata_fields import MetadataMaps, field_types, typed_values, types_for
from catalogue.permissions import (
    DEFAULT_FILE_MODE,
    NO_SUCH_FILE,
    PERMISSION_FIELDS,
    READ,
    WRITE,
    creation_denial,
    hiding_denial,
    removal_denial,
    se_in_vo,
    traversal_denial,
)
from catalogue.provenance import add_ancestor_links
from catalogue.registration_counts import registered_totals, take_over_calls
from catalogue.registration_settling import GIVEN_UP, settled
from catalogue.replica_pushes import push_replicas
from catalogue.replica_urls import se_url
from catalogue.storage_elements import fetch_storage_elements
from catalogue.unmade_directories import take_back_made
from catalogue.usage import REGISTERED_IN
from catalogue.vos import registry, vo_of_path
from catalogue.writer_tokens import WRITER, writer_digest
from kernel.db import Document, IndexSpec, database_errors
from kernel.errors import InvalidInput, NotFound
from kernel.principal import Principal

GUID_TAKEN = "GUID already belongs to another file"

INDEXES = [
    # Sparse: a file being moved carries its GUID as `moving_guid` for a moment (catalogue.moves).
    IndexSpec(FILES, [("guid", 1)], name="files_by_guid", unique=True, sparse=True),
    # what lies on an SE (reaper, SE removal): files.find({"replicas.se": se}); the auditor's
    # sorted walk: files.find({"replicas.se": se, _id: {$gt: last}}).sort(_id). One index for
    # both (a second one on replicas.se alone cost every file insert ~5% more for nothing).
    IndexSpec(FILES, [("replicas.se", 1), ("_id", 1)], name="files_by_replica_se_lfn"),
    # provenance: descendants of a file, files.find({ancestors: {$in: [lfn, ...]}})
    IndexSpec(FILES, [("ancestors", 1)], name="files_by_ancestors", sparse=True),
]


async def replica_documents(
    db: AsyncDatabase[Document], pairs: Iterable[tuple[str, ReplicaIn]], principal: Principal | None = None
) -> dict[int, ReplicaRecord]:
    """Replica sub-documents keyed by id() of each ReplicaIn, URLs built by each SE's rule (one query);
    a given URL must be the one the rule builds (`catalogue.replica_urls`). For a caller's
    `principal`, an SE its VO does not use is refused like an unknown one (`se_in_vo`): the
    answer must not tell another VO's SE from a missing one."""
    pairs = list(pairs)
    ses = await fetch_storage_elements(db, {r.se for _, r in pairs})
    if principal is not None:
        ses = {name: se for name, se in ses.items() if se_in_vo(principal, name)}
    unknown = sorted({r.se for _, r in pairs} - set(ses))
    if unknown:
        raise InvalidInput(f"unknown storage element(s): {', '.join(unknown)}", details={"unknown_ses": unknown})
    at = now()
    out: dict[int, ReplicaRecord] = {}
    for lfn, replica in pairs:
        url = se_url(ses[replica.se], lfn, replica.url)
        out[id(replica)] = {"se": replica.se, "url": url, "status": replica.status, "created": at, "modified": at}
        if replica.writer is not None:  # held by its upload from now on, as `upload_leases` keeps it
            out[id(replica)]["writer"] = writer_digest(replica.writer)
            out[id(replica)]["writer_at"] = at
    return out


def _same_file(stored: Mapping[str, Any], given: FileIn) -> str | None:
    """Why an existing record differs from the one given again, or None when it is the same file."""
    if stored.get("size") != given.size:
        return f"exists with a different size ({stored.get('size')} != {given.size})"
    if stored.get("adler32") != given.adler32:
        return f"exists with a different adler32 ({stored.get('adler32')} != {given.adler32})"
    if given.md5 and stored.get("md5") and stored["md5"] != given.md5:
        return f"exists with a different md5 ({stored['md5']} != {given.md5})"
    if given.guid and stored.get("guid") != given.guid:
        return f"exists with a different GUID ({stored.get('guid')})"
    return None


async def register_files(db: AsyncDatabase[Document], principal: Principal, files: Sequence[Any]) -> Outcome:
    """Register files with their first replicas; parents are created as with mkdir -p.

    Returns `{"successful": {lfn: {"guid", "created"}}, "failed": {lfn: reason}}`. Registering
    the same file again (same size and checksums) succeeds with `created: false` and adds any
    new replicas and ancestors, given w on the file; a different size or checksum for an
    existing LFN fails with the reason. Ancestors need r on each, which must exist, as for
    /provenance/link (`catalogue.authorization`).
    """
    parsed = parse_files(files)
    fields = await field_types(db) if any(f.meta for f in parsed) else {}
    vos = await registry(db)  # cached: the declared types, and where inherited metadata stops
    own_meta: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(parsed):
        try:
            declared = types_for(fields, vo_of_path(vos, item.lfn))  # the installation's and the file's VO's
            own_meta[id(item)] = typed_values(item.meta, declared) if item.meta else {}
        except InvalidInput as exc:
            raise InvalidInput(f"file #{index}: {exc.message}", details={"index": index, **exc.details}) from exc
    successful: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    batch: dict[str, FileIn] = {}
    for item in parsed:
        earlier = batch.get(item.lfn)
        if earlier is None:
            batch[item.lfn] = item
        elif earlier.model_dump(exclude={"replicas"}) != item.model_dump(exclude={"replicas"}):
            failed[item.lfn] = "the batch holds two different entries for this LFN"
        else:
            earlier.replicas.extend(r for r in item.replicas if r.se not in {e.se for e in earlier.replicas})
    for lfn in failed:
        batch.pop(lfn, None)
    replicas = await replica_documents(db, ((f.lfn, r) for f in batch.values() for r in f.replicas), principal)

    # One query for every directory involved: ancestors of each LFN and the LFNs themselves.
    involved = {a for lfn in batch for a in ancestors(lfn)} | set(batch)
    usage_claims.check_noted(involved)  # the call's usage claim names them: refused before any write
    dirs = await fetch_directories(db, involved)
    for lfn in list(batch):
        # The denial first: a hidden or another VO's directory must answer as a missing path does.
        reason = creation_denial(principal, lfn, dirs) or ("a directory exists at this path" if lfn in dirs else None)
        if reason:
            failed[lfn] = reason
            del batch[lfn]
    for lfn in below_moves(list(batch), dirs.values()):
        failed[lfn] = BELOW_A_MOVE
        del batch[lfn]
    for lfn, reason in (await _refused_ancestors(db, principal, batch)).items():
        failed[lfn] = reason
        del batch[lfn]
    missing = sorted({a for lfn in batch for a in ancestors(lfn)[1:] if a not in dirs})
    needed: list[str] = []
    made_at = now()
    if missing:
        clashing = set(await find_by_ids(db[FILES], missing, {"_id": 1}))
        for lfn in list(batch):
            blocked = [a for a in ancestors(lfn) if a in clashing]
            if blocked:
                failed[lfn] = f"{blocked[0]} is a file, not a directory"
                del batch[lfn]
        needed = sorted({a for lfn in batch for a in ancestors(lfn)[1:] if a not in dirs})
        await insert_directories(db, [directory_document(p, principal, mode=None, at=made_at,
                                                         metadata=metadata_fields_for(p, {}, dirs, vos))
                                      for p in needed])

    at = now()
    token = uuid.uuid4().hex
    docs = [_file_document(f, principal, [_founding(replicas[id(r)]) for r in f.replicas], at,
                           metadata_fields_for(f.lfn, own_meta[id(f)], dirs, vos)) for f in batch.values()]
    for doc in docs:  # see catalogue.registration_counts: a sweep or retry counts what a call cut short could not
        doc["registered_in"] = token
    duplicates: list[FileIn] = []
    noted = registration_counts.noted_keys(batch, {r.se for f in batch.values() for r in f.replicas})
    if docs:
        await usage_claims.intend(db, token, noted)
        try:
            with database_errors():
                await db[FILES].insert_many([dict(d) for d in docs], ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                item = batch[docs[error["index"]]["_id"]]
                if error.get("code") == DUPLICATE_KEY:
                    duplicates.append(item)
                else:
                    failed[item.lfn] = f"not written: {error.get('errmsg', 'database error')}"
    dup_lfns = {f.lfn for f in duplicates}
    named = {f.guid for f in batch.values() if f.guid}
    inserted = [doc for doc in docs if doc["_id"] not in dup_lfns and doc["_id"] not in failed]
    # judged again where its check judged it: at the directories there before its mkdir -p
    written = await _outside_moves(db, principal, token, inserted, failed, named, set(missing))
    if needed and len(written) < len(inserted):  # given up: the directories made for them only go too
        kept = {a for doc in written for a in ancestors(doc["_id"])}
        await take_back_made(db, principal.sub, [p for p in needed if p not in kept], made_at)
    for doc in written:
        successful[doc["_id"]] = {"guid": doc["guid"], "created": True}
    if docs:  # settled (`registration_settling`); the claim of a call that inserted nothing goes
        await usage_claims.settle(db, token, noted, registered_totals(written), keep=bool(inserted))
    await change_feed.append(db, [change_feed.event("file_registered", d["_id"],
                                                    replicas=[r["se"] for r in d["replicas"]]) for d in written])
    if duplicates:
        await _reconcile(db, principal, dirs, duplicates, replicas, successful, failed)
    return {"successful": successful, "failed": failed}


async def _outside_moves(db: AsyncDatabase[Document], principal: Principal, token: str, written: list[FileRecord],
                         failed: dict[str, Any], named: set[str], made: set[str]) -> list[FileRecord]:
    """Of the records a register call just wrote, those that are not below a directory a live
    move holds, and whose replicas' paths hold no moved file's bytes; the others are taken back
    (still uncounted) and fail, so that a directory move never leaves a file behind at its old
    place (`catalogue.directory_moves`) and no write goes over a moved file's bytes
    (`catalogue.moved_paths`: read after the insert, which succeeded only once a moved original
    had left its LFN, so after its paths were held), and whose GUID, if the caller named it, no
    move holds (`catalogue.guid_holds`: the insert took it while its file's copy had not), and
    that the caller may still create as the directories above stand after the insert (the same
    read; those it `made` on the way left out, as its check before had them missing): a chmod
    or chown that returned before the insert landed refuses the file, as it would have refused
    a call checked after it."""
    lfns = [doc["_id"] for doc in written]
    gone, now_above = await looked_above(db, lfns, PERMISSION_FIELDS) if written else (set(), {})
    held = dict.fromkeys(gone, BELOW_A_MOVE)
    before = {path: doc for path, doc in now_above.items() if path not in made}
    for lfn in lfns:  # a chmod or chown of a directory above since the check: judged as it stands now
        if lfn not in held and (why := creation_denial(principal, lfn, before)):
            held[lfn] = why
    for (lfn, se), why in (await moved_paths.held_by_others(
            db, ((doc["_id"], r["se"], doc["guid"]) for doc in written for r in doc["replicas"]))).items():
        held.setdefault(lfn, f"replica on SE {se} not registered: {why}")
    if moving := await guid_holds.held(db, [doc["guid"] for doc in written if doc["guid"] in named]):
        held.update({doc["_id"]: GUID_TAKEN for doc in written if doc["guid"] in moving})
    if not held:
        return written
    await give_up_registered(db, token, {doc["_id"]: doc["guid"] for doc in written if doc["_id"] in held})
    failed.update(held)
    return [doc for doc in written if doc["_id"] not in held]


async def _refused_ancestors(db: AsyncDatabase[Document], principal: Principal,
                             batch: Mapping[str, FileIn]) -> dict[str, str]:
    """Why each file of `batch` may not name its ancestors, judged as /provenance/link judges
    them: r on each, which must exist, a hidden one refused as a missing one (two queries for the
    whole batch). An ancestor missing now is taken when the same call registers it: a batch may
    hold a file and what was made from it."""
    named = sorted({a for f in batch.values() for a in f.ancestors})
    if not named:
        return {}
    _, refused = await authorized_files(db, principal, named, READ)
    out: dict[str, str] = {}
    for item in batch.values():
        first = next((a for a in item.ancestors if a in refused
                      and not (refused[a] == NO_SUCH_FILE and a in batch)), None)
        if first:
            out[item.lfn] = f"ancestor {first}: {refused[first]}"
    return out


async def _reconcile(
    db: AsyncDatabase[Document], principal: Principal, dirs: Mapping[str, Document], duplicates: list[FileIn],
    replicas: dict[int, ReplicaRecord], successful: dict[str, Any], failed: dict[str, Any],
) -> None:
    """Compare LFNs that existed already with what was given; add their new replicas and
    ancestors, which changes the file and so needs w on it (as /replicas/add and /provenance/link)."""
    first = await find_by_ids(db[FILES], (f.lfn for f in duplicates))
    stored = await settled(db, first)  # without those their register call gave up
    updates: dict[str, list[ReplicaRecord]] = {}
    for item in duplicates:
        doc = stored.get(item.lfn)
        if doc is None:
            failed[item.lfn] = GIVEN_UP if item.lfn in first else GUID_TAKEN if item.guid else (
                "concurrently removed; retry")
            continue
        reason = _same_file(doc, item)
        if not reason and (item.replicas or item.ancestors):
            reason = hiding_denial(principal, item.lfn, doc, WRITE, dirs)
        if reason:
            failed[item.lfn] = reason
            continue
        successful[item.lfn] = {"guid": doc["guid"], "created": False}
        updates.setdefault(item.lfn, []).extend(replicas[id(r)] for r in item.replicas)
    await take_over_calls(db, (stored[lfn] for lfn in updates))
    # A retry of a call cut short after its insert finds its files here: their events may never
    # have been written, so they are written again (consumers take events at least once).
    await change_feed.append(db, [change_feed.event("file_registered", lfn, replicas=[
        r["se"] for r in stored[lfn].get("replicas", [])]) for lfn in updates])
    # Ancestors first: a file they would take past its bound fails, and gets no replica either.
    linked = await add_ancestor_links(db, {f.lfn: f.ancestors for f in duplicates
                                           if f.ancestors and f.lfn in successful})
    for lfn, error in linked.refused.items():
        successful.pop(lfn, None)
        updates.pop(lfn, None)
        failed[lfn] = error.message
    refused: dict[tuple[str, str], str] = {}
    await push_replicas(db, updates, known=stored, refused=refused)
    for (lfn, se), why in refused.items():  # the file is registered, but that replica is not: the file fails
        successful.pop(lfn, None)
        failed[lfn] = f"replica on SE {se} not registered: {why}"


def _founding(replica: ReplicaRecord) -> ReplicaRecord:
    """An upload's replica as inserted with the record its registration creates: marked FOUNDING
    (a copy: the same replica pushed onto a record found there already is not)."""
    if WRITER not in replica:
        return replica
    founding = ReplicaRecord(**replica)
    founding["founding"] = True  # FOUNDING
    return founding


def _file_document(item: FileIn, principal: Principal, replicas: list[ReplicaRecord], at: dt.datetime,
                   metadata: MetadataMaps) -> FileRecord:
    doc: FileRecord = {
        "_id": item.lfn,
        "parent": parent_of(item.lfn),
        "name": name_of(item.lfn),
        "size": item.size,
        "adler32": item.adler32,
        "md5": item.md5,
        "guid": item.guid or str(uuid.uuid4()),
        "status": "active",
        "owner": principal.sub,
        "group": principal.primary_group,
        "mode": DEFAULT_FILE_MODE if item.mode is None else item.mode,
        "created": at,
        "modified": at,
        "replicas": replicas,
        "version": 0,
        "meta": metadata["meta"],
        "meta_effective": metadata["meta_effective"],
        "meta_origin": metadata["meta_origin"],
    }
    if item.ancestors:
        doc["ancestors"] = item.ancestors
    return doc


async def get_file(db: AsyncDatabase[Document], lfn: str) -> FileRecord:
    """The file record of `lfn` (with its replicas); NotFound when there is none."""
    check_lfn(lfn)
    with database_errors():
        doc = await db[FILES].find_one({"_id": lfn})
    if doc is None:
        raise NotFound(f"file {lfn} does not exist")
    return doc  # type: ignore[return-value]  # what `files` holds is what register_files wrote


async def fetch_files(db: AsyncDatabase[Document], lfns: Iterable[str], projection: Any = None) -> dict[str, Document]:
    """The existing files among `lfns`, in one `_id $in` query (the `_id` index)."""
    return await find_by_ids(db[FILES], lfns, projection)


async def authorized_files(
    db: AsyncDatabase[Document], principal: Principal, lfns: Sequence[str], bits: int, projection: Any = None
) -> tuple[dict[str, Document], dict[str, str]]:
    """Files the caller may act on with `bits` (r to read replicas, w to change them) and why
    the others are refused; two queries (the names' directories, then the files) for any number.
    A file the caller cannot reach is refused as "no such file", like a missing one, and is not
    read: reading it made a batch of hidden names cost 3-6x a batch of missing ones (a count of
    which names exist in a directory the caller cannot search). A `projection` must keep
    PERMISSION_FIELDS."""
    for lfn in lfns:
        check_lfn(lfn)
    parents = {parent_of(lfn) for lfn in lfns}  # a file's ancestors: its parent's and the parent
    dirs = await fetch_directories(db, parents.union(*(ancestors(p) for p in parents)))
    walked: dict[str, str | None] = {}
    found = await fetch_files(db, [lfn for lfn in lfns if not traversal_denial(principal, lfn, dirs, walked)],
                              projection)
    allowed: dict[str, Document] = {}
    failed: dict[str, str] = {}
    for lfn in lfns:
        doc = found.get(lfn)
        reason = "no such file" if doc is None else hiding_denial(principal, lfn, doc, bits, dirs, walked)
        if reason:
            failed[lfn] = reason
        elif doc is not None:
            allowed[lfn] = doc
    return allowed, failed


# A forced removal leaves the file's bytes on storage at the path its LFN gives (dark data): by
# another user with write on the directory, then a registration of the same LFN on that SE, it
# handed them the owner's bytes. Only the owner or an admin forgets a file that has replicas.
FORCED_BY_OTHERS = ("only the file's owner or an admin may force the removal of a file that has replicas "
                    "(its bytes stay on storage); ask them, or remove its replicas first")


async def remove_files(
    db: AsyncDatabase[Document], principal: Principal, lfns: Sequence[str], *, force: bool = False
) -> Outcome:
    """Remove file records (w on each parent); a missing file and one the caller cannot reach both
    answer `removed: false`. A file that still has replicas is kept unless `force`: the catalogue
    must not forget bytes that the reaper has not deleted yet. Each record is deleted and taken
    off the usage counters by one call (`catalogue.file_removal`)."""
    for lfn in lfns:
        check_lfn(lfn)
    dirs = await fetch_directories(db, {a for lfn in lfns for a in ancestors(lfn)})
    walked: dict[str, str | None] = {}  # a file the caller cannot reach is not read (as in `authorized_files`)
    found = await fetch_files(db, [lfn for lfn in lfns if not traversal_denial(principal, lfn, dirs, walked)],
                              {"replicas.se": 1, "owner": 1, "size": 1, REGISTERED_IN: 1})
    successful: dict[str, Any] = {}
    failed: dict[str, Any] = {}
    doomed = []
    for lfn in dict.fromkeys(lfns):
        doc = found.get(lfn)
        if doc is None or traversal_denial(principal, lfn, dirs, walked):  # hidden answers as missing
            successful[lfn] = {"removed": False}  # already gone: removal is idempotent
            continue
        reason = removal_denial(principal, lfn, dirs)
        if not reason and doc.get("replicas") and not force:
            reason = still_has_replicas(len(doc["replicas"]))
        elif not reason and doc.get("replicas") and not (principal.is_admin or doc.get("owner") == principal.sub):
            reason = FORCED_BY_OTHERS
        if reason:
            failed[lfn] = reason
        else:
            doomed.append(lfn)
    if doomed:
        removed, refused = await remove_records(db, doomed, force=force)
        failed.update(refused)
        successful.update({lfn: {"removed": lfn in removed} for lfn in doomed if lfn not in refused})
    return {"successful": successful, "failed": failed}
