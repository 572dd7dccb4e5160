"""A transfer's destination replica: registered `copying` before any byte moves, flipped to
`available` only after the copy was verified, removed (with its bytes) when the copy fails.
While it is `copying` the replica is held by the transfer (`writer` TRANSFER, renewed with the
request's lease, `catalogue.upload_leases`): an upload of the same file to that SE does not write
it, and a `copying` replica an upload holds is neither copied over nor removed here.

Every step is idempotent, so a worker that takes over a crashed worker's request finds the
replica in whatever state it was left and carries on. Status changes go through
`catalogue.replicas.set_replica_status` (a compare-and-set on the replica's status); the removal
pulls the exact element read, so it misses (and changes nothing) if the replica changed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import now
from catalogue.files import FILES, fetch_files
from catalogue.replica_pulls import pull_replicas
from catalogue.replica_pushes import push_replicas
from catalogue.replica_urls import derived_url
from catalogue.replicas import add_replicas, copying_again, set_replica_status, set_replica_statuses
from catalogue.storage_elements import StorageElement, replica_url
from catalogue.storage_paths import storage_lfn
from catalogue.writer_tokens import TRANSFER, WRITER
from kernel.db import Document, database_errors
from kernel.errors import CairnError, Conflict
from storage_plugins.registry import plugin_for
from transfers.endpoints import Endpoint

log = logging.getLogger("cairn.transfers")


async def replica_on(db: AsyncDatabase[Document], lfn: str, se: str) -> Document | None:
    """The replica of lfn on se as the catalogue has it now, or None."""
    with database_errors():
        doc = await db[FILES].find_one({"_id": lfn}, {"replicas": 1})
    for replica in (doc or {}).get("replicas", []):
        if replica.get("se") == se:
            return dict(replica)
    return None


async def register_copying(
    db: AsyncDatabase[Document], lfn: str, se: StorageElement, *, file_doc: Document | None = None
) -> str:
    """Make sure lfn has a `copying` replica on se before bytes move; returns the status found.

    "available" means the file is there already (nothing to copy). A `bad`, `unavailable` or
    `lost` replica left from an earlier attempt becomes `copying` again (set back, and Conflict,
    if a directory move holds or took a directory above the file: its writer finishes it by this
    LFN). With the file record just read (`file_doc`, with its `version`, `guid`), the replica is
    pushed against that version directly.
    """
    current = await replica_on(db, lfn, se.name) if file_doc is None else next(
        (dict(r) for r in file_doc.get("replicas", []) if r.get("se") == se.name), None)
    protocol = se.preferred_protocol("read") or se.preferred_protocol("write")
    if current is None:
        if file_doc is not None and protocol is not None:
            at = now()
            replica = {"se": se.name, "url": replica_url(protocol, lfn), "status": "copying", "created": at,
                       "modified": at, WRITER: TRANSFER}
            await push_replicas(db, {lfn: [replica]}, known={lfn: file_doc})
        else:
            outcome = await add_replicas(db, [{"lfn": lfn, "se": se.name, "status": "copying"}])
            if lfn in outcome["failed"]:  # e.g. its path there holds a moved file's bytes
                raise Conflict(f"{lfn}: {outcome['failed'][lfn]}")
        current = await replica_on(db, lfn, se.name)
        if current is None:
            raise CairnError(f"{lfn}: the copying replica on {se} vanished right after it was registered")
    status = str(current.get("status"))
    if status not in ("bad", "unavailable", "lost"):
        return status
    guid = (file_doc or (await fetch_files(db, [lfn], {"guid": 1})).get(lfn) or {}).get("guid")
    return "copying" if await copying_again(db, lfn, se.name, status, guid) else status


async def register_copying_many(
    db: AsyncDatabase[Document], wanted: Sequence[tuple[Document, StorageElement]],
    pushed: set[tuple[str, str]] | None = None,
) -> dict[tuple[str, str], str]:
    """`register_copying` for many copies at once (each `(file record just read, destination
    SE)`): the replicas not on their file yet are pushed in one guarded bulk write; the others
    (left by an earlier attempt) and the pushes that lost a race go one by one. Returns
    {(lfn, se): status found}, as `register_copying` would; adds to `pushed` the `(lfn, se)`
    whose replica the bulk write made (held by the transfers from then on: `WRITER`)."""
    statuses: dict[tuple[str, str], str] = {}
    pushes: dict[str, list[Document]] = {}
    known: dict[str, Document] = {}
    at = now()
    for file_doc, se in wanted:
        protocol = se.preferred_protocol("read") or se.preferred_protocol("write")
        if protocol is not None and not any(r.get("se") == se.name for r in file_doc.get("replicas", [])):
            known[file_doc["_id"]] = file_doc
            pushes.setdefault(file_doc["_id"], []).append({
                "se": se.name, "url": replica_url(protocol, file_doc["_id"]), "status": "copying", "created": at,
                "modified": at, WRITER: TRANSFER})
    if pushes:
        made = await push_replicas(db, pushes, known=known)
        statuses.update(dict.fromkeys(made, "copying"))
        if pushed is not None:
            pushed.update(made)
    for file_doc, se in wanted:
        if (file_doc["_id"], se.name) not in statuses:
            statuses[(file_doc["_id"], se.name)] = await register_copying(db, file_doc["_id"], se)
    return statuses


def copying_record(file_doc: Document, se: str) -> Document:
    """The file record as it is once its replica on se is `copying` (what
    `register_copying_many` made it): for `confirm_many`'s guard on the replica's position."""
    replicas = [dict(r) for r in file_doc.get("replicas", [])]
    mine = [r for r in replicas if r.get("se") == se]
    if mine:
        mine[0]["status"] = "copying"
    else:
        replicas.append({"se": se, "status": "copying"})
    return {**file_doc, "replicas": replicas}


async def confirm_many(db: AsyncDatabase[Document], copies: Mapping[str, tuple[str, Document]]) -> set[str]:
    """`confirm` for many verified copies (`{lfn: (se, record as copying_record gives it)}`) in
    one guarded bulk update; returns the LFNs whose replica is `available` now (flipped here or
    before), the others changed during their copy."""
    if not copies:
        return set()
    outcome = await set_replica_statuses(
        db, [{"lfn": lfn, "se": se, "status": "available", "expected": "copying"} for lfn, (se, _) in copies.items()],
        {lfn: record for lfn, (_, record) in copies.items()})
    confirmed = set(outcome["successful"])
    for lfn in set(copies) - confirmed:
        current = await replica_on(db, lfn, copies[lfn][0])
        if current is not None and current.get("status") == "available":
            confirmed.add(lfn)
    return confirmed


async def confirm(db: AsyncDatabase[Document], lfn: str, se: str) -> bool:
    """The copy is verified: copying → available (True if this call flipped it or it already was)."""
    if await set_replica_status(db, lfn, se, "available", expected="copying"):
        return True
    current = await replica_on(db, lfn, se)
    return current is not None and current.get("status") == "available"


async def discard(db: AsyncDatabase[Document], lfn: str, se: str, dest: Endpoint | None) -> None:
    """Remove a `copying` replica and whatever bytes an unfinished copy left at dest.

    Replicas in any other status are left alone: an available one is a finished copy.
    """
    await discard_many(db, [(lfn, se, dest)])


async def holds_whole(dest: Endpoint, file_doc: Document) -> bool:
    """Whether dest holds the file whole (the catalogue's size and adler32): the bytes an earlier
    attempt copied before it was stopped unconfirmed (partial bytes, or none, answer False)."""
    try:
        size, adler32 = await plugin_for(dest.url, dest.options).size_and_checksum(dest.url)
    except (CairnError, OSError):
        return False
    return size == file_doc.get("size") and adler32 == file_doc.get("adler32")


async def _delete_bytes(dest: Endpoint, held_until: float) -> None:
    if time.monotonic() > held_until:  # see `discard_many`
        return
    with contextlib.suppress(CairnError, OSError):
        await plugin_for(dest.url, dest.options).delete(dest.url)


async def discard_many(db: AsyncDatabase[Document], targets: Sequence[tuple[str, str, Endpoint | None]],
                       held_until: Mapping[tuple[str, str], float] | None = None) -> set[tuple[str, str]]:
    """`discard` for many `(lfn, se, dest)`: one read of their files, the bytes of those still
    `copying` deleted side by side, then those replicas pulled in one bulk write.

    `held_until` {(lfn, se): time.monotonic()}: until when the caller surely holds the lease of the
    request copying there (`Job.held_until`). Past it, its bytes and replica are left to the
    request's holder: a caller that stalled between its read and its deletion may resume after
    another worker took the request over and confirmed its own copy there (those bytes would go,
    the replica staying available), or while that copy runs. Returns the `(lfn, se)` left so."""
    if not targets:
        return set()
    until = dict(held_until or {})
    found = await fetch_files(db, {lfn for lfn, _, _ in targets}, {"replicas": 1})
    copying: dict[tuple[str, str], Endpoint | None] = {}
    for lfn, se, dest in targets:
        for replica in (found.get(lfn) or {}).get("replicas", []):
            # Not one an upload holds (`catalogue.upload_leases`): its bytes and record are that upload's.
            ours = replica.get(WRITER) in (None, TRANSFER)
            if replica.get("se") == se and replica.get("status") == "copying" and ours:
                # Only bytes at the replica's own URL go: a moved file's replica lies at its old path
                # (`catalogue.moved_paths`), and the path of its LFN may hold another file's bytes.
                own = dest is not None and dest.url == derived_url(dest.protocol, storage_lfn(lfn, replica))
                copying[(lfn, se)] = dest if own else None
    if not copying:
        return set()
    forever = float("inf")
    await asyncio.gather(*(_delete_bytes(dest, until.get(place, forever))
                           for place, dest in copying.items() if dest is not None))
    late = {place for place in copying if time.monotonic() > until.get(place, forever)}
    copying = {place: dest for place, dest in copying.items() if place not in late}
    if not copying:
        return late
    # Through the catalogue, so that the SEs' usage loses the replicas too.
    await pull_replicas(db, list(copying), status="copying")
    for lfn, se in copying:
        log.info("removed the unfinished replica of %s on %s", lfn, se)
    return late
