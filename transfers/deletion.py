"""Deleting replicas safely, a batch at a time: first retire them in the catalogue (available →
unavailable, so no one reads them any more, nor writes them again: `catalogue.replica_removal.
being_removed`), then delete their bytes, then remove the records.

Retiring is decided on each file's replicas as read and written guarded by the file's
`version` (`catalogue.replica_removal.retire_replicas`): two reapers retiring the last two copies
of a file on two SEs cannot both succeed, because the first retirement bumps the version the
second was decided on. Deletions of the same file in one batch are decided one after the other
on the same read, each seeing the ones before it.

Protection contract (for the rules engineer and anyone else who wants a replica kept): a
replica is never deleted by the reaper's space cleanup, nor by a deletion request naming its
SE, while it has
- `locks` > 0 — the number of rule locks on it, the size of its `lock_rules` (the rules holding
  them; both set together by `rules.locks.change_replica_locks`, compare-and-set on the
  file's `version` like `catalogue.replicas.set_replica_status`), or
- `protected: true` — a manual hold, or
- `pinned_until` later than now — a pin (a job reading it, a staged file being used).
Only an explicit request to delete every replica of a file (administrators) overrides them; the
removal is in the catalogue's change feed, from which the rules whose locks protected the
replica learn it (`rules.feed`): their evaluator puts those locks back to replicating and
copies the file again.

Bytes go per SE, grouped by plugin, through `StoragePlugin.delete_many` (S3: DeleteObjects;
others: at most DELETE_CONCURRENCY deletions at once per SE); the SEs in parallel.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import moved_paths
from catalogue.files import fetch_files
from catalogue.replica_removal import REMOVAL, being_removed, remove_retired, retire_replicas
from catalogue.replica_urls import se_url
from catalogue.storage_elements import StorageElement
from catalogue.storage_paths import storage_lfn
from kernel import lease
from kernel.db import Document
from kernel.errors import CairnError, InvalidInput
from storage_plugins.base import DELETE_CONCURRENCY, StoragePlugin
from storage_plugins.registry import plugin_for
from transfers.endpoints import endpoints
from transfers.failures import file_replaced

Target = tuple[str, str]  # (lfn, se)


class Refused(Exception):
    """The replica must not be deleted (last copy, locked, protected, pinned)."""


@dataclass(frozen=True)
class Deletion:
    """One unit of deletion (a request, a replica to evict): the replicas of `lfn` on `ses`, all or
    none; `allow_last` and `override_protection` as for an explicit every-replica request."""

    key: str
    lfn: str
    ses: tuple[str, ...]
    allow_last: bool = False
    override_protection: bool = False
    guid: str | None = None  # the file meant (a request's, `failures.file_replaced`); None: any at lfn


@dataclass(frozen=True)
class Place:
    """Where a replica's bytes are: its registered URL, and the LFN its URLs derive from (a moved
    file's replica keeps the one it was written under, `catalogue.moved_paths`); and the GUID of
    the file it was retired from."""

    url: str | None
    path: str
    guid: str | None = None


@dataclass(frozen=True)
class Retired:
    """`retire_many`'s answer: the targets retired by key, the refused, the targets' places, and
    the deletions whose LFN now names another file than theirs (`replaced`, with the reason)."""

    targets: dict[str, list[Target]]
    refused: dict[str, str]
    places: dict[Target, Place]
    replaced: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What became of a batch of deletions, by key: the SEs whose replicas are gone (`done`; an
    absent replica counts as gone), refused with the reason, or failed with a storage or
    catalogue error (to be retried); `replaced`: nothing done, the LFN names another file now."""

    done: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)
    failed: dict[str, CairnError] = field(default_factory=dict)


def protection(replica: Mapping[str, Any], at: dt.datetime) -> str | None:
    """Why a replica is protected from deletion, or None."""
    if int(replica.get("locks") or 0) > 0:
        return f"locked by {replica['locks']} rule lock(s)"
    if replica.get("protected"):
        return "protected"
    pinned = replica.get("pinned_until")
    if isinstance(pinned, dt.datetime) and pinned > at:
        return f"pinned until {pinned.isoformat()}"
    return None


def _check_inside(se: StorageElement, lfn: str, replica: Mapping[str, Any]) -> None:
    try:
        se_url(se, storage_lfn(lfn, replica), replica.get("url") or None)
    except InvalidInput as exc:
        raise Refused(f"{lfn} on {se.name}: {exc.message}") from exc


def _decide(deletion: Deletion, replicas: list[Document], ses: Mapping[str, StorageElement] | None,
            at: dt.datetime) -> list[tuple[int, str, bool]]:
    """The deletion's replicas as `(position, se, to_retire)` (to_retire False: already retired
    by a deletion at work), deciding on `replicas` (the file as read, with this batch's earlier
    retirements applied); raises Refused. With `ses`, each replica's SE must be there and its URL inside it."""
    lfn, chosen = deletion.lfn, []
    for name in deletion.ses:
        index = next((i for i, r in enumerate(replicas) if r.get("se") == name), None)
        if index is None:
            continue
        replica = replicas[index]
        if ses is not None:
            if name not in ses:
                raise Refused(f"SE {name} does not exist")
            _check_inside(ses[name], lfn, replica)
        if replica.get("status") == "copying":
            raise Refused(f"{lfn} on {name}: a transfer is writing it; cancel the transfer first")
        reason = None if deletion.override_protection else protection(replica, at)
        if reason:
            raise Refused(f"{lfn} on {name}: {reason}")
        others = [r for r in replicas if r.get("se") not in (name, *deletion.ses) and r.get("status") == "available"]
        if not others and not deletion.allow_last and replica.get("status") == "available":
            raise Refused(f"{lfn} on {name}: the last available replica; only a request to delete every replica "
                          "may remove it")
        # One retired otherwise (no removal token), or by a deletion abandoned long ago, is retired
        # again: the mark keeps writers off it while its bytes go (`replica_removal.being_removed`).
        chosen.append((index, name, replica.get("status") != "unavailable" or not being_removed(replica, at)))
    return chosen


async def retire_many(db: AsyncDatabase[Document], deletions: Sequence[Deletion],
                      ses: Mapping[str, StorageElement] | None) -> Retired:
    """Retire the deletions' replicas: the targets retired (or already so) by key, the refused,
    and where the targets' bytes are. One read and one bulk write per round; files that changed
    meanwhile are read and decided again (a few rounds), then refused."""
    retired: dict[str, list[Target]] = {}
    refused: dict[str, str] = {}
    replaced: dict[str, str] = {}
    places: dict[Target, Place] = {}
    pending = list(deletions)
    for _ in range(5):
        files = await fetch_files(db, {d.lfn for d in pending}, {"replicas": 1, "version": 1, "guid": 1})
        at = dt.datetime.now(dt.UTC)
        plans: dict[str, tuple[Any, list[tuple[int, str]]]] = {}
        tokens: dict[Target, str] = {}
        decided: dict[str, list[Target]] = {}
        for deletion in pending:
            doc = files.get(deletion.lfn)
            if doc is None:
                retired[deletion.key] = []
                continue
            if other := file_replaced({"lfn": deletion.lfn, "guid": deletion.guid}, doc):
                replaced[deletion.key] = other.message
                continue
            replicas = doc.setdefault("replicas", [])
            try:
                chosen = _decide(deletion, replicas, ses, at)
            except Refused as exc:
                refused[deletion.key] = str(exc)
                continue
            for index, name, to_retire in chosen:
                places[(deletion.lfn, name)] = Place(replicas[index].get("url"),
                                                     storage_lfn(deletion.lfn, replicas[index]), doc.get("guid"))
                if to_retire:
                    if replicas[index].get(REMOVAL):
                        tokens[(deletion.lfn, name)] = replicas[index][REMOVAL]
                    replicas[index] = {**replicas[index], "status": "unavailable"}
                    plans.setdefault(deletion.lfn, (doc.get("version"), []))[1].append((index, name))
            decided[deletion.key] = [(deletion.lfn, name) for _, name, _ in chosen]
        # Guarded by the GUID read too: a file removed and registered again at the LFN since
        # may have come back to the same version and replicas.
        written = await retire_replicas(db, plans, guids={lfn: files[lfn].get("guid") for lfn in plans}, tokens=tokens)
        pending = [d for d in pending if d.key in decided and d.lfn in plans and d.lfn not in written]
        again = {d.key for d in pending}
        retired.update({key: targets for key, targets in decided.items() if key not in again})
        if not pending:
            break
    refused.update({d.key: f"{d.lfn}: the file kept changing; try again" for d in pending})
    return Retired(retired, refused, places, replaced)


async def delete_bytes(places: Mapping[Target, Place], ses: Mapping[str, StorageElement],
                       credentials: Mapping[str, Mapping[str, str]]) -> dict[Target, CairnError]:
    """Delete the bytes of retired replicas `{(lfn, se): place}` (already gone is fine):
    per SE and plugin in bulk, the SEs at once. Returns the targets whose bytes could not be
    deleted, with the error."""
    failed: dict[Target, CairnError] = {}
    groups: dict[str, dict[StoragePlugin, dict[str, Target]]] = defaultdict(lambda: defaultdict(dict))
    for (lfn, name), place in places.items():
        try:
            ep = endpoints(ses[name], place.path, "delete", credentials=credentials, registered_url=place.url)[0]
        except CairnError as exc:
            failed[(lfn, name)] = exc
            continue
        groups[name][plugin_for(ep.url, ep.options)][ep.url] = (lfn, name)

    async def on_se(by_plugin: dict[StoragePlugin, dict[str, Target]]) -> None:
        for plugin, urls in by_plugin.items():
            # Work under a lease deletes only while it surely holds it: a holder that stalled
            # past it may find the path freed by its successor and a new file's bytes there.
            lease.check_held()
            errors = await plugin.delete_many(list(urls), concurrency=DELETE_CONCURRENCY)
            for url, exc in errors.items():
                failed[urls[url]] = exc if isinstance(exc, CairnError) else CairnError(f"{url}: {exc}")

    await asyncio.gather(*(on_se(by_plugin) for by_plugin in groups.values()))
    return failed


async def delete_held_bytes(db: AsyncDatabase[Document], places: Mapping[Target, Place],
                            ses: Mapping[str, StorageElement], credentials: Mapping[str, Mapping[str, str]]
                            ) -> dict[Target, CairnError]:
    """`delete_bytes` of the retired replicas whose records still say so, their paths held
    meanwhile (`moved_paths.hold_for_deletion`): a file forced out of the catalogue since its
    retirement, and another registered at its LFN, would otherwise lose its new bytes. A target
    whose record is gone or is another file's now is left alone (the forced-out file's bytes are
    dark data, as that removal says)."""
    await moved_paths.hold_for_deletion(db, [(se, p.path, p.guid) for (_, se), p in places.items()])
    try:
        files = await fetch_files(db, {lfn for lfn, _ in places}, {"guid": 1, "replicas": 1})
        kept = {target: place for target, place in places.items()
                if _still_retired(files.get(target[0]), target, place)}
        return await delete_bytes(kept, ses, credentials) if kept else {}
    finally:
        await moved_paths.end_deletion(db, [(se, p.path) for (_, se), p in places.items()])


def _still_retired(doc: Mapping[str, Any] | None, target: Target, place: Place) -> bool:
    """Does the file record still hold the retired replica (same file, same path, a removal token)?"""
    if doc is None or (place.guid is not None and doc.get("guid") != place.guid):
        return False
    return any(r.get("se") == target[1] and r.get("status") == "unavailable" and r.get(REMOVAL)
               and storage_lfn(target[0], r) == place.path for r in doc.get("replicas", []))


async def delete_replicas(db: AsyncDatabase[Document], deletions: Sequence[Deletion],
                          ses: Mapping[str, StorageElement], credentials: Mapping[str, Mapping[str, str]]) -> Outcome:
    """Retire, delete the bytes of and remove the replicas of a batch of deletions (a few round
    trips for the whole batch). A deletion whose bytes could not all be deleted fails (its
    replicas stay retired, and are removed when it is tried again); the others' records go."""
    retired = await retire_many(db, deletions, ses)
    errors = await delete_held_bytes(db, retired.places, ses, credentials) if retired.places else {}
    gone = await remove_retired(db, [t for t in retired.places if t not in errors])
    # A path is free once no record would delete there again (a replica that stays keeps it held).
    await moved_paths.release(db, [(se, retired.places[(lfn, se)].path) for lfn, se in gone])
    outcome = Outcome(refused=retired.refused, replaced=retired.replaced)
    for key, found in retired.targets.items():
        error = next((errors[t] for t in found if t in errors), None)
        if error is not None:
            outcome.failed[key] = error
        else:
            outcome.done[key] = [name for _, name in found]
    return outcome


async def retire(db: AsyncDatabase[Document], lfn: str, se: str, *, allow_last: bool,
                 override_protection: bool = False) -> bool:
    """Retire one replica (`retire_many` for one); False if there is none. Raises Refused."""
    retired = await retire_many(db, [Deletion("one", lfn, (se,), allow_last, override_protection)], None)
    if retired.refused:
        raise Refused(retired.refused["one"])
    return bool(retired.targets.get("one"))
