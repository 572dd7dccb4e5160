"""A file record moved to a new LFN by exactly one call, with the replicas it has when it goes.

Two moves of the same file (a client retrying a `cairn mv` that timed out, two users) both read
it before either moved it; each inserting its copy and deleting the original by `_id` left the
file at two LFNs (two destinations), or counted its move twice (one destination). So a move marks
the record as a removal does (`removing`, a `kernel.marks.Mark` with the removals' lease): another
move or a removal of the file meanwhile is refused (409) or waits. It then reads the record back,
inserts its copy at the destination (its GUID as `moving_guid` until the original is gone: the
GUID index is unique) and deletes the original by its mark and by the `version` it copied: a
replica added or removed meanwhile bumps it, and the copy is taken back and made again from a
fresh read (up to MOVE_ROUNDS times). An original that left another way meanwhile (a removal
that took a lapsed mark over) makes the move take its copy back and answer 409; so does a
directory above the file or its destination being moved (`catalogue.directory_moves`), or one
above its destination gone once the copy is in (removed meanwhile: the copy would be left
without it). Before its first copy the call claims its counts (`catalogue.move_counts`): a server
killed half-way leaves the copy and the count to the transfer workers' sweep, which takes the
copy back (the original still there) or counts the move (it is gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalogue import change_feed, guid_holds, move_counts, moved_paths
from catalogue.directory_moves import looked_above, moving_above
from catalogue.files import FILES
from catalogue.permissions import PERMISSION_FIELDS, creation_denial, removal_denial, require
from catalogue.registration_counts import take_over_calls
from catalogue.usage import COPY_CALL, REMOVAL_LEASE, REMOVING
from kernel.db import Document, database_errors
from kernel.errors import Conflict, NotFound
from kernel.marks import Mark
from kernel.principal import Principal

MOVE_ROUNDS = 5


async def landing(db: AsyncDatabase[Document], principal: Principal, source: str, destination: str
                  ) -> tuple[bool, str | None, str]:
    """Read once a move's new record is at `destination`: whether a directory above it went or a
    move holds one (`directory_moves.moving_or_gone_above`), and why the caller may not move
    `source` there as the directories above both stand now (a chmod or chown since the move's
    check, of the destination's directory or of the source's, returned before the record landed,
    refuses it as it refuses a move checked after it), with the path the denial is about. One read."""
    gone, above = await looked_above(db, [destination, source], PERMISSION_FIELDS)
    if destination in gone:
        return True, None, destination
    if denial := creation_denial(principal, destination, above):
        return False, denial, destination
    return False, removal_denial(principal, source, above), source


async def move_file_record(db: AsyncDatabase[Document], principal: Principal, source: str, destination: str,
                           place: Callable[[Document], Document],
                           refusal: Callable[[Document], Awaitable[str | None]]) -> tuple[Document, Document]:
    """Move the file at `source` to the record `place` makes of it as it is now; returns the
    record moved (as it was) and the new one. 404 when it is gone; 409 when another call is
    moving or removing it, when the destination is taken, when it keeps changing, or with the
    reason `refusal` finds in the record as read under the mark (after the mark: a call that
    names the file by its LFN writes first and looks for the mark after)."""
    mark = Mark(REMOVING, REMOVAL_LEASE)
    with database_errors():
        marked = await db[FILES].update_one({"$and": [{"_id": source}, mark.free()]},
                                            {"$set": {REMOVING: mark.value()}})
        if not marked.modified_count and await db[FILES].find_one({"_id": source}, {"_id": 1}) is None:
            raise NotFound(f"{source} does not exist")
    if not marked.modified_count:
        raise Conflict(f"{source} is being moved or removed by another request; try again")
    copy: Document | None = None
    held: list[str] = []  # the GUID, held from before the original leaves until the copy has it
    claim: move_counts.Claim | None = None  # claimed before the first copy goes in
    claiming = False  # from the first try to claim: a claim may have been written
    deleted = False  # the original: once it is gone, the copy is the file (never taken back)
    try:
        if await moving_above(db, [source, destination]):
            raise Conflict(f"a directory above {source} or {destination} is being moved; try again")
        for _ in range(MOVE_ROUNDS):
            with database_errors():
                current = await db[FILES].find_one({"_id": source, **mark.mine()})
            if current is None:
                raise Conflict(f"{source} was moved or removed by another request meanwhile; nothing moved")
            if reason := await refusal(current):
                raise Conflict(reason)
            # The move takes the file off its old place's counts: its register call's counting must
            # be done (`catalogue.usage`), and before a copy exists, which a take-over would count too.
            await take_over_calls(db, [current])
            claiming = True
            claim = await move_counts.intend(db, mark, source, destination, current, claim)
            copy = _copy_of(place(current), mark.token)
            await moved_paths.hold(db, [copy])  # before the original leaves its LFN
            try:
                with database_errors():
                    await db[FILES].insert_one(copy)
            except DuplicateKeyError:
                copy = None
                raise Conflict(f"{destination} exists already") from None
            gone, denial, denied = await landing(db, principal, source, destination)
            if gone:  # its directory removed since it was looked at
                raise Conflict(f"a directory above {destination} was removed or is being moved; nothing moved")
            require(denial, denied)
            if current.get("guid") and not held:
                held.append(current["guid"])
                await guid_holds.hold(db, held)
            if await mark.delete(db[FILES], [source], "the move", where={"version": current.get("version")}):
                placing, copy, deleted = copy, None, True
                placed = await _placed(db, source, placing)
                await move_counts.settle(db, claim)
                return current, placed
            await _take_back(db, copy)  # the original changed (or went) since it was read
            copy = None
        raise Conflict(f"{source} kept changing while it was moved; nothing moved, try again")
    except BaseException:
        if copy is not None:
            await asyncio.shield(_take_back(db, copy))
        # Its claim settled before its mark goes (`move_counts.give_up`); a call that could not
        # settle it, or whose original is gone, leaves both to the sweep (and the mark to lapse).
        if not deleted and (not claiming or await asyncio.shield(move_counts.give_up(db, mark.token))):
            await asyncio.shield(mark.take_off(db[FILES], [source]))
        raise
    finally:
        if held:
            await asyncio.shield(guid_holds.release(db, held))


def _copy_of(record: Document, token: str) -> Document:
    """The new record as first written: its GUID held as `moving_guid` (also what tells the copy
    from a record made there otherwise), the call's token (COPY_CALL: what the sweep takes back
    or places, `catalogue.move_counts`), the original's mark left behind."""
    copy = {k: v for k, v in record.items() if k not in (REMOVING, "guid")}
    copy["moving_guid"] = record.get("guid")
    copy[COPY_CALL] = token
    return copy


async def _placed(db: AsyncDatabase[Document], source: str, copy: Document) -> Document:
    """The copy is the file now, its original gone: its GUID back (the call's token off), and
    the move told."""
    placed = {k: v for k, v in copy.items() if k not in ("moving_guid", COPY_CALL)}
    if copy["moving_guid"] is not None:
        placed["guid"] = copy["moving_guid"]
        await guid_holds.restore(db[FILES], [(copy["_id"], copy["moving_guid"])])
    else:
        with database_errors():
            await db[FILES].update_one({"_id": copy["_id"]}, {"$unset": {"moving_guid": "", COPY_CALL: ""}})
    await change_feed.append(db, [change_feed.event("file_removed", source, moved_to=copy["_id"]),
                                  change_feed.event("file_registered", copy["_id"], moved_from=source)])
    return placed


async def _take_back(db: AsyncDatabase[Document], copy: Document) -> None:
    """Remove a copy whose original stayed: this call's (by its token), never another's that a
    later move of the file put at the same place."""
    with database_errors():
        await db[FILES].delete_one({"_id": copy["_id"], COPY_CALL: copy[COPY_CALL]})
