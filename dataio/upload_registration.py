"""The registration step of an upload (`dataio.upload`): the batch's files registered with a
`copying` replica on the SE (the permission check, before any byte moves), then the replicas to
write held for this upload (`dataio.upload_lease`); what cannot be written becomes an outcome."""

from __future__ import annotations

import time
from typing import Any

from catalogue.refusals import refusal
from catalogue.storage_elements import StorageElement
from catalogue.storage_paths import storage_lfn
from catalogue.writer_tokens import IN_PROGRESS, writer_digest
from dataio.io_client import IOClient
from dataio.progress import FileOutcome
from dataio.upload_items import PlannedFile
from dataio.upload_lease import UploadLease
from dataio.upload_undo import finished_by_others
from kernel.errors import CairnError


async def register(
    client: IOClient, se: StorageElement, lease: UploadLease, planned: list[PlannedFile],
    outcomes: dict[str, FileOutcome],
) -> None:
    """Register every file with a copying replica (one call) and hold the replicas this upload is
    to write (one call); refusals become failed outcomes, a file on the SE already `exists`."""
    if not planned:
        return
    # The replicas this registration makes are held by this upload from the start (`writer`);
    # only those found there already are taken by a hold call.
    replica = {"se": se.name, "status": "copying", "writer": lease.writer}
    files = [{"lfn": p.lfn, "size": p.size, "adler32": p.adler32, "replicas": [replica]} for p in planned]
    sent = time.monotonic()
    result = await client.register_files(files)
    existing = await _existing_files(client, [p.lfn for p in planned if p.lfn not in result["failed"]
                                              and not result["successful"][p.lfn].get("created")])
    to_hold: list[PlannedFile] = []
    made: list[str] = []  # replicas this registration made: held already
    for item in planned:
        if item.lfn in result["failed"]:
            reason = result["failed"][item.lfn]
            outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "failed", se.name, size=item.size,
                                             adler32=item.adler32, code="refused",
                                             error=f"{item.lfn} not registered, nothing sent to SE {se.name}: {reason}")
            continue
        item.created = bool(result["successful"][item.lfn].get("created"))
        if isinstance(existing.get(item.lfn), CairnError):  # removed since (another upload's undo): this file only
            outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "failed", se.name, size=item.size,
                                             adler32=item.adler32, code="conflict",
                                             error=f"{item.lfn} not sent to SE {se.name}: "
                                                   f"{existing[item.lfn].message}; try again")
            continue
        mine = [] if item.created else [r for r in existing[item.lfn].get("replicas", []) if r.get("se") == se.name]
        status = mine[0].get("status") if mine else None
        if status == "available":
            outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "exists", se.name, mine[0].get("url"),
                                             item.size, item.adler32,
                                             notes=[f"already on SE {se.name} with the same adler32"])
        elif status not in (None, "copying") or (mine and storage_lfn(item.lfn, mine[0]) != item.lfn):
            # A bad or unavailable replica is an operator's (or the reaper's) business: do not
            # overwrite its bytes, nor forget it on rollback. Nor one left by an upload whose
            # file was moved meanwhile: its bytes lie at the old LFN's path.
            outcomes[item.lfn] = FileOutcome(
                item.lfn, str(item.local), "failed", se.name, size=item.size, adler32=item.adler32,
                code="conflict", error=f"{item.lfn} already has a {status} replica on SE {se.name}; "
                                       "remove it (cairn replicas / rm) before uploading again")
        elif item.created or (mine and mine[0].get("writer") == writer_digest(lease.writer)):
            made.append(item.lfn)
        else:
            to_hold.append(item)
    lease.adopt(made, sent)
    await _hold(client, se, lease, to_hold, outcomes)


async def _hold(client: IOClient, se: StorageElement, lease: UploadLease, items: list[PlannedFile],
                outcomes: dict[str, FileOutcome]) -> None:
    """Take the lease on the replicas to write: a replica another upload is writing fails as
    `in_progress` (nothing undone: it is not this upload's), one it finished meanwhile `exists`."""
    refused = await lease.take([item.lfn for item in items]) if items else {}
    finished = await finished_by_others(client, se, [item for item in items if item.lfn in refused])
    for item in items:
        # Taken over from an upload whose registration made the record: this one removes it if it fails.
        item.created = item.created or item.lfn in lease.founding
        if item.lfn in finished:
            outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "exists", se.name, finished[item.lfn],
                                             item.size, item.adler32,
                                             notes=["another upload of the same file finished first"])
        elif item.lfn in refused:
            reason = refused[item.lfn]
            code = "in_progress" if reason.startswith(IN_PROGRESS) else "conflict"
            outcomes[item.lfn] = FileOutcome(
                item.lfn, str(item.local), "failed", se.name, size=item.size, adler32=item.adler32, code=code,
                error=f"{item.lfn} not sent to SE {se.name}: {reason}" + (
                    "; try again once it is over" if code == "in_progress" else ""))


async def _existing_files(client: IOClient, lfns: list[str]) -> dict[str, Any]:
    """The records of files that were registered before this upload (one call), or why one can
    no longer be read (removed right after this registration found it)."""
    if not lfns:
        return {}
    result = await client.lookup_files(lfns)
    return {**result["successful"], **{lfn: refusal(lfn, reason) for lfn, reason in result["failed"].items()}}
