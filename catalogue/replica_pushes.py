"""Adding replicas to files: one guarded update per file, each counted once on its SE.

A push is guarded by the file's `version` and carries its call's token
(`catalogue.replica_writers`), so calls racing on the same files count each replica once. A
replica being written (`copying`) names its file by LFN until its writer finishes it, so one
that a directory move would carry away is taken back (`_taken_back`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, moved_paths, usage_intents
from catalogue.collection_names import FILES
from catalogue.directories import find_by_ids, now
from catalogue.directory_moves import BELOW_A_MOVE, carried_or_moving
from catalogue.replica_pulls import pull_replicas
from catalogue.replica_writers import ADDED, REPLICA_WRITERS, new_token, write_round, writer_field, written_by
from catalogue.storage_paths import PATH_LFN
from kernel.db import Document, database_errors, find_by_values, increment
from kernel.errors import Conflict

log = logging.getLogger(__name__)
PUSH_ROUNDS = 8  # rounds of a replica push that keeps losing races before it gives up on the rest
PUSH_FIELDS = {"replicas.se": 1, "version": 1, "size": 1, "guid": 1, REPLICA_WRITERS: 1}  # what a push reads
HOLDER_FIELDS = {"guid": 1, "moving_guid": 1, "replicas.se": 1, "replicas.status": 1, REPLICA_WRITERS: 1}
TAKE_BACK_ROUNDS = 40  # looks for replicas to take back; a move's drop-to-restore gap lasts one round trip
TAKE_BACK_PAUSE = 0.02


async def push_replicas(
    db: AsyncDatabase[Document], wanted: Mapping[str, Sequence[Mapping[str, Any]]], *,
    known: Mapping[str, Document] | None = None, refused: dict[tuple[str, str], str] | None = None,
) -> list[tuple[str, str]]:
    """Append replicas to files unless the file has one on that SE already (one per SE), and
    account the replicas added to their SEs' usage. Returns the `(lfn, se)` pairs this call added.
    A replica whose path on its SE holds a moved file's bytes (`catalogue.moved_paths`) is not
    added; nor is a `copying` one (a writer's) on a file that a directory move is carrying, or
    has carried, away from the LFN its writer finishes it by: looked for after the push
    (`_taken_back`). Those are listed in `refused` when given, else the call raises Conflict
    (for a held path before writing anything; a replica taken back is off its file again).

    Each update is guarded by the file's `version` (bumped by every replica change) rather than
    by `replicas.se $ne`, which FerretDB 1.24 evaluates wrongly on arrays, and carries the call's
    token (`catalogue.replica_writers`): a round that partly missed reads the files back, counts
    the replicas with its token, and tries the rest again. Two round trips per batch when
    nothing races.
    """
    pending = {lfn: reps for lfn, reps in wanted.items() if reps}
    docs = dict(known or {})
    if pending and not docs:
        docs = await find_by_ids(db[FILES], pending, PUSH_FIELDS)
    held = await moved_paths.held_by_others(db, (
        (lfn, r["se"], docs[lfn].get("guid")) for lfn, reps in pending.items() if lfn in docs
        for r in reps if not r.get(PATH_LFN)))
    if held:
        if refused is None:
            (lfn, se), why = min(held.items())
            raise Conflict(f"{lfn} on SE {se}: {why}", details={"held": sorted(held)})
        refused.update(held)
        pending = {lfn: [r for r in reps if (lfn, r["se"]) not in held] for lfn, reps in pending.items()}
    token = new_token()
    noted: usage_intents.Records = {}  # the SE records noting this call (`usage_intents`), at its first write
    counts: dict[str, list[int]] = {}
    added: list[tuple[str, str]] = []
    for _ in range(PUSH_ROUNDS):
        at = now()
        updates = []
        attempted: list[tuple[str, str]] = []
        for lfn, reps in pending.items():
            doc = docs.get(lfn)
            if doc is None:
                continue
            present = {r["se"] for r in doc.get("replicas", [])}
            new = list({r["se"]: r for r in reps if r["se"] not in present}.values())
            if new:
                attempted.extend((lfn, r["se"]) for r in new)
                writers = {writer_field(r["se"], ADDED): token for r in new}
                updates.append(UpdateOne({"_id": lfn, "version": doc.get("version")},
                                         {"$push": {"replicas": {"$each": new}}, "$set": {"modified": at, **writers},
                                          **increment({"version": 1})}))
        if not updates:
            break
        sizes = {lfn: int(docs[lfn].get("size", 0)) for lfn, _ in attempted}
        if not noted:
            noted = await usage_intents.intend(db, token, +1, ((lfn, r["se"]) for lfn, reps in pending.items()
                                                                  for r in reps))
        mine, reread = await write_round(db[FILES], updates, attempted, ADDED, token, pending, PUSH_FIELDS)
        docs = docs if reread is None else reread
        for lfn, se in mine:
            usage_intents.tally(counts, se, +1, sizes[lfn])
        added.extend(mine)
        if len(mine) == len(attempted):
            break
    if noted:
        await usage_intents.settle(db, token, noted, counts)
    await change_feed.append(db, [change_feed.event("replica_added", lfn, se=se) for lfn, se in added])
    writing = {(lfn, r["se"]) for lfn, reps in pending.items() for r in reps if r.get("status") == "copying"}
    taken = await _taken_back(db, [pair for pair in added if pair in writing], docs, token)
    if taken and refused is None:
        lfn, se = min(taken)
        raise Conflict(f"{lfn} on SE {se}: {BELOW_A_MOVE}", details={"held": sorted(taken)})
    if refused is not None:
        refused.update(dict.fromkeys(taken, BELOW_A_MOVE))
    return [pair for pair in added if pair not in taken]


async def _taken_back(db: AsyncDatabase[Document], written: list[tuple[str, str]], docs: Mapping[str, Document],
                      token: str) -> set[tuple[str, str]]:
    """Of the `copying` replicas this call just added (`written`), those it took back off their
    files because a directory move holds a directory above them or has taken one away.

    A directory move looks for replicas being written once its mark is on; a push looks for the
    mark (or the directories gone) once its replica is on: one of the two sees the other. A
    push that sees a move takes its replica back wherever the file is now, found by its GUID
    (the move may have carried it already): the pull bumps the file's version, so a move that
    copied the file meanwhile copies it again without the replica (`catalogue.moves`), and it
    counts the replica off its SE's usage once. Before any byte moves: the writer then fails
    that copy with BELOW_A_MOVE, to be tried again once the move has ended."""
    if not written:
        return set()
    leaving = await carried_or_moving(db, {lfn for lfn, _ in written})
    taken = [(lfn, se) for lfn, se in written if lfn in leaving]
    if not taken:
        return set()
    if unknown := [lfn for lfn, _ in taken if not docs[lfn].get("guid")]:
        docs = {**docs, **await find_by_ids(db[FILES], unknown, {"guid": 1})}  # still at their LFN: a move holds them
    wanted = {(docs[lfn]["guid"], se) for lfn, se in taken if docs.get(lfn, {}).get("guid")}
    guids = sorted({guid for guid, _ in wanted})
    for _ in range(TAKE_BACK_ROUNDS if wanted else 0):
        mine = [(doc, r["se"]) for doc in await _holders(db, guids) for r in doc.get("replicas", [])
                if (doc.get("guid") or doc.get("moving_guid"), r["se"]) in wanted and r.get("status") == "copying"
                and written_by(doc, r["se"], ADDED, token)]
        if not mine:
            return set(taken)
        # Only a record with its GUID counts: a move's copy (`moving_guid`) is dropped with its
        # original's change, or gets the GUID back a round trip after the original left.
        if settled := [(doc["_id"], se) for doc, se in mine if doc.get("guid")]:
            await pull_replicas(db, settled, status="copying")
        else:
            await asyncio.sleep(TAKE_BACK_PAUSE)
    log.warning("%d replica(s) being written could not be taken back off files a directory move carried away "
                "(e.g. %s); they stay `copying` at the files' new LFNs", len(wanted), min(wanted))
    return set(taken)


async def set_back(db: AsyncDatabase[Document], guid: str, se: str, was: str) -> None:
    """Set the `copying` replica on se of the file of this GUID back to `was`, wherever the file is
    now: for a writer that set a replica left `was` (bad, unavailable, lost) to `copying` again
    and then found a directory move above it (looked for after, as a push does). The change bumps
    the file's version, so a move that copied the file meanwhile copies it again."""
    for _ in range(TAKE_BACK_ROUNDS):
        holders = await _holders(db, [guid])
        mine = [(doc, index) for doc in holders for index, r in enumerate(doc.get("replicas", []))
                if r.get("se") == se and r.get("status") == "copying"]
        if not mine:
            return
        settled = [(doc, index) for doc, index in mine if doc.get("guid")]
        if not settled:
            await asyncio.sleep(TAKE_BACK_PAUSE)
            continue
        doc, index = settled[0]
        with database_errors():
            result = await db[FILES].update_one(
                {"_id": doc["_id"], "guid": guid, f"replicas.{index}.se": se, f"replicas.{index}.status": "copying"},
                {"$set": {f"replicas.{index}.status": was, f"replicas.{index}.modified": now()},
                 **increment({"version": 1})})
        if result.modified_count:
            await change_feed.append(db, [change_feed.event("replica_status", doc["_id"], se=se, status=was)])
    log.warning("the replica on SE %s of the file of GUID %s could not be set back to %s", se, guid, was)


async def _holders(db: AsyncDatabase[Document], guids: list[str]) -> list[Document]:
    """The records of these GUIDs: by `guid` (its index, `find_by_values`), and for those not found
    by `moving_guid` (a move's copy before its original left: no index, read only after a
    directory move took files away)."""
    found = await find_by_values(db[FILES], "guid", guids, HOLDER_FIELDS)
    missing = sorted(set(guids) - {doc["guid"] for doc in found})
    with database_errors():
        if missing:
            found += await db[FILES].find({"moving_guid": {"$in": missing}}, HOLDER_FIELDS).to_list()
    return found
