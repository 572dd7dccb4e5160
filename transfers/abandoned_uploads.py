"""Uploads that died for good: `copying` replicas an upload registered and then fell silent on (its
process killed, its host gone) and that no retry took over for `transfers.abandoned_upload_s`
(a day by default). Left alone, such a replica keeps its LFN reserved, whatever bytes the upload
stored on the SE, and its size on the SE's usage, for ever: nothing else ends an upload's work.

The reaper undoes them as the upload's own undo would have (`dataio.upload_undo`), acting as one
more upload: it takes each replica over with a writer token of its own (`catalogue.upload_leases`:
one guarded update on the replica as read, so a retry renewing or taking it meanwhile wins and the
reaper leaves it), deletes the bytes at the replica's path on its SE while that hold is renewed,
each storage call only while its last renewal is fresh (`kernel.lease.while_held`, as an upload
fences its writes), then removes the replica and, where the dead upload's
registration created the record and it is its only replica, the record too
(`catalogue.upload_undos`: the SE's usage and the directory's counts go with them). A reaper
killed in between leaves the replicas held by its token (REAPER_MARK and a random part, a shape no
upload's digest has): the next pass takes them once that hold has been silent for LEASE_S, as a
dead upload's hold lapses, not for another `abandoned_upload_s`.

An undo cut short is finished the same way: an upload's undo deletes the bytes, claims the
replica `copying` -> `unavailable` (marked `writer_tokens.UNDOING`) and removes it; one killed
between the claim and the removal left an `unavailable` replica its writer holds, the LFN taken and
the SE's usage counting it. Once that writer has been silent for `abandoned_upload_s`, the reaper
holds it (status `unavailable`), deletes whatever bytes are at its path and undoes it.

Replicas a transfer holds (TRANSFER) or that carry no upload's token (a `copying` registration by
hand) are not uploads' and are left alone; so is an `unavailable` replica without the undo's mark
(an operator's or the auditor's) and one the reaper is removing (REMOVAL).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES, fetch_files
from catalogue.replica_removal import REMOVAL
from catalogue.storage_elements import StorageElement
from catalogue.storage_paths import storage_lfn
from catalogue.upload_leases import hold_replicas
from catalogue.upload_undos import undo_held_replicas
from catalogue.writer_tokens import LEASE_S, RENEWALS, TRANSFER, UNDOING, WRITER, WRITER_AT
from kernel import lease
from kernel.db import Document, pages_by_id
from kernel.documents import aware
from kernel.principal import ADMIN_SCOPE, Principal
from transfers.deletion import Place, delete_bytes

log = logging.getLogger("cairn.reaper")

# The reaper acts for the installation: the records it removes are dead uploads' own.
SYSTEM = Principal(sub="cairn", vo="", groups=("admin",), scopes=frozenset({ADMIN_SCOPE}))
BATCH = 500  # replicas taken over, deleted and undone together
# A reaper pass's writer token starts so (an upload's is 32 hex digits of a digest, which the
# server computes: no upload can hold a replica under this shape).
REAPER_MARK = "reaper-"
SCANS_PER_PERIOD = 4  # the catalogue is looked through this often per abandoned_upload_s (at most hourly)
# Files with a `copying` replica or one an undo claimed (FerretDB takes no `$elemMatch` of fields:
# which replica, and whose, is told from the record as read, `abandoned_on`).
LOOKED_AT = {"$or": [{"replicas.status": "copying"}, {f"replicas.{UNDOING}": {"$exists": True}}]}


def scan_every_s(abandoned_upload_s: float) -> float:
    """How often the reaper looks for abandoned uploads: a few times per period, at most hourly."""
    return min(abandoned_upload_s / SCANS_PER_PERIOD, 3600.0)


@dataclass
class Swept:
    """What one pass did: replicas undone (`records_removed` of them with their record); replicas
    whose bytes or undo failed (held by this pass: looked at again once its hold too has been
    silent for `abandoned_upload_s`); replicas a live writer renewed or took meanwhile (`left`
    to it); and whether the pass stopped at its batch with more to look at (`more`)."""

    undone: int = 0
    records_removed: int = 0
    failed: int = 0
    left: int = 0
    more: bool = False


def abandoned_on(doc: Mapping[str, Any], before: dt.datetime) -> list[tuple[str, str]]:
    """The SEs and statuses of doc's `copying` replicas, and of those an undo claimed, whose
    upload has been silent since before `before` (a reaper pass's hold: for LEASE_S)."""
    out = []
    lapsed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=LEASE_S)
    for replica in doc.get("replicas", []):
        held, status = replica.get(WRITER), replica.get("status")
        since = replica.get(WRITER_AT, replica.get("modified"))
        undoing = status == "unavailable" and replica.get(UNDOING) is not None and not replica.get(REMOVAL)
        if not (status == "copying" or undoing) or held in (None, TRANSFER) or not isinstance(since, dt.datetime):
            continue
        if aware(since) < (lapsed if str(held).startswith(REAPER_MARK) else before):
            out.append((str(replica["se"]), str(status)))
    return out


async def find_abandoned(db: AsyncDatabase[Document], before: dt.datetime, *,
                         limit: int | None = None) -> tuple[dict[tuple[str, str], dict[str, Document]], bool]:
    """Up to `limit` (BATCH) abandoned upload replicas, by SE and status: `{(se, status): {lfn:
    record as read}}`, and whether the look stopped there. The files are read by key in pages
    (memory holds one page), each filtered on its replicas."""
    found: dict[tuple[str, str], dict[str, Document]] = {}
    count, limit = 0, limit or BATCH
    async for doc in pages_by_id(db[FILES], LOOKED_AT, None, page=BATCH):
        for place in abandoned_on(doc, before):
            found.setdefault(place, {})[doc["_id"]] = doc
            count += 1
        if count >= limit:
            return found, True
    return found, False


async def sweep(db: AsyncDatabase[Document], ses: Mapping[str, StorageElement],
                credentials: Mapping[str, Mapping[str, str]], abandoned_upload_s: float) -> Swept:
    """Undo the upload replicas silent for longer than abandoned_upload_s (up to BATCH per call;
    the reaper calls again while there are more)."""
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=abandoned_upload_s)
    found, more = await find_abandoned(db, before)
    swept = Swept(more=more)
    for (se_name, status), files in found.items():
        se = ses.get(se_name)
        if se is None:  # an SE removed under its replicas: nothing to delete the bytes with
            swept.failed += len(files)
            continue
        await _undo_on(db, se, status, files, credentials, swept)
    return swept


async def _undo_on(db: AsyncDatabase[Document], se: StorageElement, status: str, files: dict[str, Document],
                   credentials: Mapping[str, Mapping[str, str]], swept: Swept) -> None:
    """Take the replicas (in `status`) over, then delete their bytes and undo them while every hold
    is renewed (`kernel.lease.while_held`: each storage call checks the holds are fresh, as an
    upload's writes do)."""
    writer = f"{REAPER_MARK}{uuid.uuid4().hex}"  # this pass's own: a killed pass's holds lapse like an upload's
    since = time.monotonic()
    items = [{"lfn": lfn, "se": se.name} for lfn in files]
    taken = list((await hold_replicas(db, writer, items, files, status=status))["successful"])
    swept.left += len(files) - len(taken)
    if not taken:
        return

    async def keep() -> bool:
        now_files = await fetch_files(db, taken, {"replicas": 1})
        renewed = await hold_replicas(db, writer, [{"lfn": lfn, "se": se.name} for lfn in now_files], now_files,
                                      renew=True, status=status)
        return len(renewed["successful"]) == len(taken)

    held, _ = await lease.while_held(_delete_and_undo(db, se, writer, taken, credentials, swept), keep,
                                     every_s=LEASE_S / RENEWALS, lease_s=LEASE_S, since=since)
    if not held:
        log.warning("lost the hold of some of %d abandoned uploads on %s; left for the next pass", len(taken), se.name)


async def _delete_and_undo(db: AsyncDatabase[Document], se: StorageElement, writer: str, lfns: list[str],
                           credentials: Mapping[str, Mapping[str, str]], swept: Swept) -> None:
    records = await fetch_files(db, lfns)
    mine = {lfn: doc for lfn, doc in records.items()
            if any(r.get("se") == se.name and r.get(WRITER) == writer for r in doc.get("replicas", []))}
    swept.left += len(lfns) - len(mine)
    # Where each replica's bytes are (a moved file's at the LFN they were written under), deleted as
    # the reaper deletes retired replicas' (`transfers.deletion.delete_bytes`: nothing there is fine).
    places = {(lfn, se.name): Place(replica.get("url") or None, storage_lfn(lfn, replica))
              for lfn, doc in mine.items() for replica in doc["replicas"] if replica.get("se") == se.name}
    failed = await delete_bytes(places, {se.name: se}, credentials)
    for (lfn, _), error in failed.items():
        log.warning("bytes of the abandoned upload of %s on %s not deleted: %s", lfn, se.name, error)
    swept.failed += len(failed)
    done = {lfn: doc for lfn, doc in mine.items() if (lfn, se.name) not in failed}
    if not done:
        return
    lease.check_held()
    outcome = await undo_held_replicas(db, SYSTEM, writer, se.name, done)
    swept.undone += len(outcome["successful"])
    swept.records_removed += sum(1 for answer in outcome["successful"].values() if answer["record_removed"])
    swept.failed += len(outcome["failed"])
    for lfn, why in outcome["failed"].items():
        log.warning("abandoned upload of %s to %s not undone: %s", lfn, se.name, why)

