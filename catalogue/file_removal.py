"""Removal of file records, each taken off the usage counters by exactly one call.

Two calls removing the same file (two users, or a client retrying a request that timed out
while the first still runs) both read its record before either deletes it; were each to delete
by `_id` and count what it had read, the file's directories and its replicas' SEs would lose it
twice. So a call marks the records it means to remove (`removing`, a `kernel.marks.Mark` with
lease REMOVAL_LEASE), reads back those that carry its mark, deletes them by it and counts what it
read. A record another live call marked is left to that call (this one waits up to
ELSEWHERE_WAIT for it to end, then says so). A record that leaves another way meanwhile (a move,
a tree removal) is counted by that way: if fewer records were deleted than went, the call cannot
tell which were its own and counts none. A lapsed mark (a call that died between marking and
deleting: its files were never taken off) is taken over by the next removal; a stall of more
than half a lease just before a delete could still miscount (`cairn usage rebuild` mends it). A
call claims its count before its deletes and settles it after (`catalogue.removal_counts`): one
killed in between leaves it to the transfer workers' sweep. A file below a directory being moved is given up
(`catalogue.directory_moves`).
Without `force`, a record is marked only while it has no replica, so a replica added after the
caller's permission check keeps the file. A record is deleted only at the `version` read under the
mark: a replica added, removed or overwritten between that read and the delete bumps it, and the
record is read again (and, without force, kept if it now has a replica), so what is taken off the
counters is what the record held when it went. Cost: one more write and read of each record.
An upload's undo (`held`) removes a record it founded together with its one replica, as long as
that replica is still the only one and its upload's (`founding_only`): no record is left empty
by an undo cut between two writes, and none goes that a transfer or another upload took over.
A forced removal holds its records' replicas' paths before it deletes them, until the reaper has
deleted their bytes (`catalogue.removed_paths`); it takes back the holds of records it kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, removal_counts, removed_paths
from catalogue.collection_names import FILES
from catalogue.directory_moves import BELOW_A_MOVE, moving_above
from catalogue.registration_counts import take_over_calls
from catalogue.registration_settling import wait_settled
from catalogue.removed_paths import RemovedPlace
from catalogue.replica_removal import REMOVAL, remove_retired
from catalogue.storage_paths import PATH_LFN
from catalogue.usage import REGISTERED_IN, REMOVAL_LEASE, REMOVING
from catalogue.writer_tokens import FOUNDING, WRITER
from kernel.db import Document, database_errors, read_by_ids
from kernel.marks import Mark, by_ids

ELSEWHERE_WAIT = 5.0  # seconds a removal waits for another call removing some of its files (a loaded
# server takes over a second for a few hundred records: six calls over the same 300 files answered
# "try again" at 1 s on a busy 2-core machine)
BATCH = 1000  # records one removal marks, deletes and counts at a time
DELETE_ROUNDS = 5  # reads of records whose replicas keep changing under the mark before giving them up
# What counting a removal reads, and the rules that locked its replicas (named in its event).
COUNTED_FIELDS = {"replicas.se": 1, "replicas.lock_rules": 1, "size": 1, "guid": 1, REGISTERED_IN: 1}
# What a removal reads besides: its mark, the version it deletes at, and retired replicas.
_GUARD_FIELDS = {REMOVING: 1, "version": 1, "replicas.se": 1, "replicas.status": 1, f"replicas.{REMOVAL}": 1,
                 "guid": 1, "replicas.url": 1, f"replicas.{PATH_LFN}": 1,  # and where their bytes are
                 f"replicas.{WRITER}": 1, f"replicas.{FOUNDING}": 1}  # and whose (`held`)
HELD_STATUSES = ("copying", "unavailable")  # an upload's replica its undo may remove with the record
log = logging.getLogger(__name__)


def still_has_replicas(count: int) -> str:
    return f"file still has {count} replica(s); remove them first or force"


async def remove_records(db: AsyncDatabase[Document], lfns: Sequence[str], *, force: bool,
                         held: tuple[str, str] | None = None) -> tuple[set[str], dict[str, str]]:
    """Mark, delete and count the records of lfns (permission checked) that no other call is
    removing; with `held` (SE, upload writer digest), also those whose only replica is the one
    that upload founded and still holds (`founding_only`). Returns the LFNs this call removed,
    and why some were not: one that gained a replica (without force), one another call still
    holds after a short wait for it. The rest were removed by someone else meanwhile. In
    batches of BATCH, each with its own mark and count claim (a claim holds its records as read:
    one for 100,000 would pass the database's document size)."""
    removed: set[str] = set()
    refused: dict[str, str] = {}
    for start in range(0, len(lfns), BATCH):
        gone, kept = await _remove_batch(db, lfns[start:start + BATCH], force=force, held=held)
        removed |= gone
        refused.update(kept)
    return removed, refused


async def _remove_batch(db: AsyncDatabase[Document], lfns: Sequence[str], *, force: bool,
                        held: tuple[str, str] | None) -> tuple[set[str], dict[str, str]]:
    claim = await claim_removals(db, lfns, COUNTED_FIELDS, force=force, held=held)
    noted: list[str] = []
    intended = False
    try:
        await wait_settled(db, claim.records.values())  # a live register call counts its own
        await take_over_calls(db, claim.records.values())  # what is taken off was counted
        if claim.records:  # a server killed after its deletes leaves the count to the sweep
            intended = True  # from the first try: a claim may have been written
            noted = await removal_counts.intend(db, claim.mark.token, claim.mark.at, claim.records)
        removed = await delete_claimed(db, claim)
    except BaseException:
        # What it deleted is counted off before its marks go (`removal_counts.give_up`); a call that
        # cannot count it leaves the marks to lapse and the count to the sweep.
        if not intended or await asyncio.shield(removal_counts.give_up(db, claim.mark.token)):
            await asyncio.shield(release(db, claim))
        raise  # its holds stay: the reaper tells those of records kept from those of records gone
    await _unhold_kept(db, claim, removed)
    if claim.records:
        await removal_counts.settle(db, claim.mark.token, noted, removed.values())
    await change_feed.append(db, [_removed_event(lfn, doc) for lfn, doc in removed.items()])
    refused = {lfn: still_has_replicas(count) for lfn, count in claim.kept.items()}
    for lfn, since in (await _still_elsewhere(db, claim.elsewhere)).items():
        refused[lfn] = f"file is being removed by another request (since {since.isoformat()}); try again"
    for lfn in claim.moving:
        refused[lfn] = BELOW_A_MOVE
    for lfn in claim.changing:
        refused[lfn] = "file's replicas kept changing while it was removed; nothing removed, try again"
    return set(removed), refused


async def _unhold_kept(db: AsyncDatabase[Document], claim: Claim, removed: dict[str, Document]) -> None:
    """Take back the holds of records that stayed (given up, kept, another call's now): those
    still at their LFN with their GUID. A record this call held and that went otherwise (a move,
    another removal) keeps its holds: the reaper finds where its bytes stand (`removed_paths`)."""
    stayed = [lfn for lfn in claim.held if lfn not in removed]
    if not stayed:
        return
    now_there = {doc["_id"]: doc.get("guid") async for doc in read_by_ids(db[FILES], stayed, {"guid": 1})}
    await removed_paths.unhold_removed(db, [place for lfn in stayed for place in claim.held[lfn]
                                            if lfn in now_there and now_there[lfn] == place.guid])


def _removed_event(lfn: str, doc: Document) -> change_feed.Event:
    """`file_removed`, naming the rules that locked its replicas (a forced removal): they look
    again, as after a locked replica's removal, instead of staying ok with nothing behind them."""
    rules = sorted({rule for r in doc.get("replicas", []) for rule in r.get("lock_rules") or ()})
    return change_feed.event("file_removed", lfn, lock_rules=rules) if rules else change_feed.event("file_removed", lfn)


@dataclass
class Claim:
    """What one removal call marked and read back, and what it found in other hands."""

    mark: Mark
    records: dict[str, Document] = field(default_factory=dict)  # marked by this call, as read after marking
    elsewhere: dict[str, dt.datetime] = field(default_factory=dict)  # being removed by another call (since)
    kept: dict[str, int] = field(default_factory=dict)  # gained replicas since the check (without force): how many
    moving: set[str] = field(default_factory=set)  # below a directory being moved: given up, left as they are
    force: bool = False  # whether records with replicas are removed too
    projection: dict[str, int] = field(default_factory=dict)  # what is read of each record, to be counted
    changing: set[str] = field(default_factory=set)  # changed under the mark at every read: given up
    held: dict[str, list[RemovedPlace]] = field(default_factory=dict)  # paths held for their bytes' deletion (force)
    founder: tuple[str, str] | None = None  # (SE, writer): an undo's, whose founding replica may go too

    def removable(self, doc: Document) -> bool:
        """Whether the record as read may go: forced, without replicas, or (an undo's) with only
        the founding replica its upload holds."""
        return self.force or not doc.get("replicas") or (
            self.founder is not None and founding_only(doc, *self.founder))


def founding_only(doc: Document, se: str, writer: str) -> bool:
    """Whether the record's only replica is the one upload `writer` founded on se and still holds."""
    replicas = doc.get("replicas") or []
    return len(replicas) == 1 and replicas[0].get("se") == se and replicas[0].get(WRITER) == writer and bool(
        replicas[0].get(FOUNDING)) and replicas[0].get("status") in HELD_STATUSES


async def _hold_paths(db: AsyncDatabase[Document], claim: Claim, records: dict[str, Document]) -> None:
    """A forced removal holds the paths of the replicas of these records, as read, before any of
    them may leave the catalogue (`catalogue.removed_paths`)."""
    if not claim.force:
        return
    places = {lfn: removed_paths.places_of({lfn: doc}) for lfn, doc in records.items()}
    await removed_paths.hold_removed(db, [p for found in places.values() for p in found])
    for lfn, found in places.items():
        claim.held.setdefault(lfn, []).extend(p for p in found if p not in claim.held.get(lfn, []))


async def claim_removals(db: AsyncDatabase[Document], lfns: Sequence[str], projection: dict[str, int], *,
                         force: bool, held: tuple[str, str] | None = None) -> Claim:
    """Mark lfns' records for this call (free ones, or ones whose mark outlived the lease), then
    read them back: which are this call's (with their fields in `projection`), which another
    call's, which gained a replica. An LFN whose record is gone is in none of them."""
    claim = Claim(Mark(REMOVING, REMOVAL_LEASE), force=force, projection=projection, founder=held)
    empty: Document = {"replicas.0": {"$exists": False}}
    if held is not None:  # or only the founding replica of the undo's upload (checked again as read)
        empty = {"$or": [empty, {"replicas.0.se": held[0], f"replicas.0.{WRITER}": held[1],
                                 "replicas.1": {"$exists": False}}]}
    conditions = [claim.mark.free()] if force else [claim.mark.free(), empty]
    with database_errors():
        for flt in by_ids(lfns, *conditions):
            await db[FILES].update_many(flt, {"$set": {REMOVING: claim.mark.value()}})
    marked_kept: list[str] = []
    async for doc in read_by_ids(db[FILES], lfns, {**projection, **_GUARD_FIELDS}):
        mine, mark = claim.mark.holds(doc), doc.pop(REMOVING, None) or {}
        if mine and not claim.removable(doc):  # a replica came between the mark and this read
            claim.kept[doc["_id"]] = len(doc["replicas"])
            marked_kept.append(doc["_id"])
        elif mine:
            claim.records[doc["_id"]] = doc
        elif mark or force or not doc.get("replicas"):  # held, or let go by its holder just now
            claim.elsewhere[doc["_id"]] = mark.get("at", claim.mark.at)
        else:
            claim.kept[doc["_id"]] = len(doc["replicas"])
    if marked_kept:
        await claim.mark.take_off(db[FILES], sorted(marked_kept))
    claim.moving = await moving_above(db, claim.records) if claim.records else set()
    if claim.moving:
        await claim.mark.take_off(db[FILES], sorted(claim.moving))
        claim.records = {lfn: doc for lfn, doc in claim.records.items() if lfn not in claim.moving}
    return claim


async def delete_claimed(db: AsyncDatabase[Document], claim: Claim) -> dict[str, Document]:
    """Delete the records this call marked, by its mark and at the `version` read; the ones it
    deleted, as they were when deleted, to be counted. A record changed since it was read (a
    replica added, removed or overwritten) is read again and tried again; without force, one
    that has a replica now is kept (`claim.kept`) and its mark taken off."""
    removed: dict[str, Document] = {}
    records = dict(claim.records)
    for _ in range(DELETE_ROUNDS):
        if not records:
            return removed
        if retired := _being_removed(records):
            # A deletion's count may have taken these off their SEs already (by their removal
            # tokens) and not yet pulled them: they go its way, counted once, and the records
            # are read again.
            await _hold_paths(db, claim, {lfn: records[lfn] for lfn, _ in retired})
            await remove_retired(db, retired)
            deleted = 0
        else:
            await _hold_paths(db, claim, records)
            deleted = await _delete_as_read(db, claim.mark, records)
            if deleted == len(records):
                return removed | records
        # Some records were not deleted: changed since read (still marked by this call, at another
        # version), or went otherwise (a move or a tree removal took them, or a call that took over
        # marks this one let lapse). Of those gone, if exactly as many are gone as this call
        # deleted, those are its own; else it cannot tell which, and counts none.
        now_there = {doc["_id"]: doc async for doc in read_by_ids(db[FILES], records,
                                                                  {**claim.projection, **_GUARD_FIELDS})}
        gone = {lfn: doc for lfn, doc in records.items() if lfn not in now_there}
        if len(gone) == deleted:
            removed |= gone
        else:
            log.warning("a removal deleted %d records while %d of the ones it marked went: it cannot tell which "
                        "were its own and counts none (`cairn usage rebuild` mends the drift)", deleted, len(gone))
        records, kept = {}, []
        for lfn, doc in now_there.items():
            if not claim.mark.holds(doc):
                continue  # another call's now (it took a lapsed mark over)
            doc.pop(REMOVING, None)
            if not claim.removable(doc):
                claim.kept[lfn] = len(doc["replicas"])
                kept.append(lfn)
            else:
                records[lfn] = doc
        await claim.mark.take_off(db[FILES], sorted(kept))
    if records:
        claim.changing.update(records)
        await claim.mark.take_off(db[FILES], sorted(records))
    return removed


def _being_removed(records: dict[str, Document]) -> list[tuple[str, str]]:
    """The replicas of records that a deletion retired, with their removal token
    (`catalogue.replica_removal`), as `(lfn, se)`."""
    return sorted((lfn, r["se"]) for lfn, doc in records.items() for r in doc.get("replicas", [])
                  if r.get(REMOVAL) and r.get("status") == "unavailable")


async def _delete_as_read(db: AsyncDatabase[Document], mark: Mark, records: dict[str, Document]) -> int:
    """Delete the records by the mark and at the `version` each was read at: one delete per
    version found among them (a few: a version counts a file's replica changes)."""
    by_version: dict[object, list[str]] = {}
    for lfn, doc in sorted(records.items()):
        by_version.setdefault(doc.get("version"), []).append(lfn)
    deleted = 0
    for version, lfns in by_version.items():
        deleted += await mark.delete(db[FILES], lfns, "the removal", where={"version": version})
    return deleted


async def release(db: AsyncDatabase[Document], claim: Claim) -> None:
    """Take this call's marks off (it failed before its delete): its files stay, free at once."""
    await claim.mark.take_off(db[FILES], sorted(claim.records))


async def _still_elsewhere(db: AsyncDatabase[Document], elsewhere: dict[str, dt.datetime]) -> dict[str, dt.datetime]:
    """Of records another call is removing, those still there after waiting up to ELSEWHERE_WAIT
    for that call to end (a live one ends within milliseconds)."""
    deadline = time.monotonic() + ELSEWHERE_WAIT
    while elsewhere and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        present = await _present(db, elsewhere)
        elsewhere = {lfn: since for lfn, since in elsewhere.items() if lfn in present}
    return elsewhere


async def _present(db: AsyncDatabase[Document], lfns: Iterable[str]) -> set[str]:
    """Which of lfns have a record now."""
    return {doc["_id"] async for doc in read_by_ids(db[FILES], lfns, {"_id": 1})}
