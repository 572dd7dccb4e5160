"""Rule locks as the replicas record them: each replica's `lock_rules` (the rules holding a lock
on it) and `locks` (their number), which deletion checks before removing a replica
(`transfers.deletion`). The catalogue writes them, on the rules' behalf (`rules.locks`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import UpdateMany
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from kernel.db import Document, bulk_write_chunked, increment, read_by_ids
from kernel.errors import ServiceUnavailable

LOCK_UPDATE_ATTEMPTS = 10
# What `change_lock_rules` reads of a file (and `replica_states` hands to callers that decide by
# availability before locking, so that one read serves both).
PROJECTION = {"replicas.se": 1, "replicas.status": 1, "replicas.locks": 1, "replicas.lock_rules": 1}


async def replica_states(db: AsyncDatabase[Document], lfns: Iterable[str]) -> dict[str, Document]:
    """The files' replicas (SE, status and rule locks), read by `_id` in slices: what
    `change_lock_rules` needs as `files`, and what `catalogue.availability.available_ses` reads."""
    return {doc["_id"]: doc async for doc in read_by_ids(db[FILES], lfns, PROJECTION)}


async def change_lock_rules(db: AsyncDatabase[Document], rules_by_replica: Mapping[str, Mapping[str, set[str]]], *,
                            add: bool, files: Mapping[str, Document] | None = None) -> set[tuple[str, str]]:
    """Add rule ids to (or take them from) replicas' `lock_rules`, `locks` following;
    `rules_by_replica` is {lfn: {se: rule ids}}. Returns the replicas `(lfn, se)` found gone
    (no replica on that SE, or no file) in a read: when adding, the locks their caller must not
    count as protecting anything (a removal that came first carried no lock of theirs).

    Per round: one read of the files (in slices), then one `update_many` per kind of change —
    usually one per SE for a batch of a rule's locks, as `catalogue.replicas.set_replica_statuses`
    does (FerretDB scans for every filter but `_id`, so one write per file would cost more). Each
    write is guarded by every changed replica's SE, `locks` and `lock_rules` as read: a concurrent
    change (another rule's lock, a shifted array) makes that file miss, and the files are read and
    computed again. (The count alone was no guard: one rule's lock released and another's added
    since the read leave it as it was, and a write from that read put the released rule back and
    dropped the added one.) Bumps `version` (a reaper deciding on the old one reads
    again). Replicas that are gone are skipped. Raises ServiceUnavailable if files keep changing.

    `files`, when given, are the records as the caller just read them (`replica_states`): the
    first round computes from them instead of reading again (the guards make a stale one miss)."""
    pending: dict[str, Mapping[str, set[str]]] = dict(rules_by_replica)
    gone: set[tuple[str, str]] = set()
    for _ in range(LOCK_UPDATE_ATTEMPTS):
        groups: dict[tuple[tuple[int, str, Any, Any, tuple[str, ...]], ...], list[str]] = defaultdict(list)
        given = {lfn: files[lfn] for lfn in pending if lfn in files} if files is not None else {}
        docs = {**given, **{doc["_id"]: doc async for doc in read_by_ids(
            db[FILES], [lfn for lfn in pending if lfn not in given], PROJECTION)}}
        files = None
        for lfn, rules_by_se in pending.items():
            present = {r.get("se") for r in docs.get(lfn, {}).get("replicas", [])}
            gone.update((lfn, se) for se in rules_by_se if se not in present)
            if lfn in docs and (changes := _lock_changes(docs[lfn], rules_by_se, add)):
                groups[changes].append(lfn)
        if not groups:
            return gone
        updates = [_lock_update(changes, group) for changes, group in groups.items()]
        result = await bulk_write_chunked(db[FILES], updates)
        if result.modified_count == sum(map(len, groups.values())):
            return gone
        changing = [lfn for group in groups.values() for lfn in group]
        pending = {lfn: pending[lfn] for lfn in changing}
    raise ServiceUnavailable("the replicas of these files kept changing while their rule locks were updated")


def _lock_changes(doc: Document, rules_by_se: Mapping[str, set[str]], add: bool
                  ) -> tuple[tuple[int, str, Any, Any, tuple[str, ...]], ...]:
    """What adding (or removing) rules changes on a file's replicas: (position, SE, `locks` as
    read, new rule set) per replica that changes; () if none does."""
    changes = []
    for i, replica in enumerate(doc.get("replicas", [])):
        rules_here = rules_by_se.get(replica.get("se"))
        if not rules_here:
            continue
        old = set(replica.get("lock_rules") or ())
        new = old | rules_here if add else old - rules_here
        if new != old:
            was = replica.get("lock_rules")
            changes.append((i, replica["se"], replica.get("locks"), None if was is None else tuple(was),
                            tuple(sorted(new))))
    return tuple(changes)


def _lock_update(changes: tuple[tuple[int, str, Any, Any, tuple[str, ...]], ...], lfns: list[str]) -> UpdateMany:
    guard: dict[str, Any] = {"_id": {"$in": lfns}}
    fields: dict[str, Any] = {}
    for i, se, count, was, new in changes:
        guard[f"replicas.{i}.se"] = se
        guard[f"replicas.{i}.locks"] = count  # None also matches a replica never locked
        guard[f"replicas.{i}.lock_rules"] = None if was is None else list(was)  # the set as read, not only its size
        fields[f"replicas.{i}.lock_rules"] = list(new)
        fields[f"replicas.{i}.locks"] = len(new)
    return UpdateMany(guard, {"$set": fields, **increment({"version": 1})})
