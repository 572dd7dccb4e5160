"""The undo of an upload that failed: its bytes and its registration go, once the replica is
this upload's to undo (it holds its lease, `dataio.upload_lease`, and takes it `copying` ->
`unavailable`); what another upload holds or made `available` stays, bytes and record.

Each step is fenced against a stall of the undo itself (its process held up past the lease,
after which a transfer may take the `unavailable` replica over and write it): the bytes are
deleted only while the lease is fresh (`UploadLease.fence`, as bytes are written), before the
claim; the catalogue removes the replica, and with it a record this upload founded, only while
this upload still holds it (`catalogue.upload_undos`), in one call."""

from __future__ import annotations

import contextlib
from typing import Any

from catalogue.storage_elements import StorageElement
from dataio.io_client import IOClient
from dataio.signed_access import needs_signing
from dataio.upload_items import PlannedFile
from dataio.upload_lease import LeaseLost, UploadLease
from kernel.errors import CairnError
from transfers.endpoints import Endpoint


async def discard(client: IOClient, ep: Endpoint, lfn: str, writer: str | None = None) -> None:
    """Remove a partial or unverified object (nothing there is fine); signed, the server does it
    while upload `writer` holds the replica."""
    with contextlib.suppress(CairnError, OSError):
        if needs_signing(ep):
            await client.discard_stored(lfn, ep.se.name, writer)  # the server deletes: no DELETE URL outlives its check
            return
        await client.plugin(ep.url, ep.options).delete(ep.url)


async def finished_by_others(client: IOClient, se: StorageElement, items: list[PlannedFile]) -> dict[str, str | None]:
    """Of files whose flip was refused, those whose replica on se another upload of the same
    bytes (same size and adler32, as registration checked) made `available` meanwhile: their URLs."""
    return {lfn: replica.get("url") for lfn, replica in (await same_bytes_available(client, se, items)).items()}


async def same_bytes_available(client: IOClient, se: StorageElement, items: list[PlannedFile]) -> dict[str, Any]:
    """The `available` replicas on se of those of items registered with their size and adler32
    (one lookup); a lookup that fails answers none."""
    if not items:
        return {}
    try:
        found = (await client.lookup_files([item.lfn for item in items]))["successful"]
    except CairnError:
        return {}
    out: dict[str, Any] = {}
    for item in items:
        doc = found.get(item.lfn) or {}
        mine = [r for r in doc.get("replicas", []) if r.get("se") == se.name and r.get("status") == "available"]
        if mine and doc.get("size") == item.size and doc.get("adler32") == item.adler32:
            out[item.lfn] = mine[0]
    return out


async def roll_back(client: IOClient, se: StorageElement, lease: UploadLease, item: PlannedFile,
                    stored: Endpoint | None) -> list[str]:
    """Delete what was stored (if anything) and undo the registration, once the replica is this
    upload's to undo: one it does not hold (another upload's, in progress or taken over after
    this one fell silent) is left alone, bytes and record."""
    try:
        lost = await lease.ensure([item.lfn])
    except (CairnError, OSError) as exc:  # unreachable: whether it is still this upload's is unknown
        return [f"registration of {item.lfn} left as it is: {exc}"]
    if lost:
        return [f"registration of {item.lfn} left as it is: {lost[item.lfn]}"]
    try:
        return await _undo(client, se, lease, item, stored)
    finally:
        await lease.release([item.lfn])


async def _undo(client: IOClient, se: StorageElement, lease: UploadLease, item: PlannedFile,
                stored: Endpoint | None) -> list[str]:
    notes = [] if stored is None else await discard_held(client, lease, stored, item.lfn)
    claimed, why = await _claim(client, se, lease.writer, item)
    if not claimed:
        return [*notes, why, *await _forget_empty(client, item)]
    return [*notes, *await _unregister(client, se, lease.writer, item)]


async def discard_held(client: IOClient, lease: UploadLease, stored: Endpoint, lfn: str) -> list[str]:
    """Delete what this upload stored, only while it holds the replica for LEASE_S / 2 more at
    least (another writer takes it only LEASE_S after its last renewal), as bytes are written:
    after a stall (the process held up, the renewals late) the bytes there may be another's.
    Once the replica is claimed `unavailable` nothing renews it: delete before the claim."""
    try:
        await lease.fence(lfn)
    except (LeaseLost, CairnError, OSError) as exc:
        return [f"bytes of {lfn} left as they are: {exc}"]
    await discard(client, stored, lfn, lease.writer)  # signed: the server deletes only a replica still ours
    return []


async def _claim(client: IOClient, se: StorageElement, writer: str, item: PlannedFile) -> tuple[bool, str]:
    """Take the replica `copying` -> `unavailable` (guarded, and only while this upload holds it):
    no other upload flips it from then on. Refused (it is `available`, another writer took it
    over, or another undo took it): (False, why)."""
    try:
        result = await client.set_replica_statuses(
            [{"lfn": item.lfn, "se": se.name, "status": "unavailable", "expected": "copying", "writer": writer}])
    except CairnError as exc:
        return False, f"registration of {item.lfn} left as it is: {exc.message}"
    if item.lfn in result["failed"]:
        return False, f"registration of {item.lfn} left as it is: {result['failed'][item.lfn]}"
    return True, ""


async def _forget_empty(client: IOClient, item: PlannedFile) -> list[str]:
    """A file this upload created, left without any replica by another upload's undo, goes too
    (a file with replicas is kept: it is no longer only this upload's)."""
    if not item.created:
        return []
    with contextlib.suppress(CairnError):
        result = await client.remove_files([item.lfn])
        if not result["failed"]:
            return ["registration undone"]
    return []


async def _unregister(client: IOClient, se: StorageElement, writer: str, item: PlannedFile) -> list[str]:
    """Undo the registration of a failed upload whose replica it claimed; notes say what could not
    be undone. Only a replica this upload still holds goes (not one a transfer took over while
    this undo stalled), and a record it founded with it, in one call, if no other replica was
    added to it since (`catalogue.upload_undos`)."""
    try:
        result: dict[str, Any] = await client.undo_replicas(writer, se.name, [item.lfn])
    except CairnError as exc:
        return [f"could not undo the registration of {item.lfn}: {exc.message}"]
    if result["failed"]:
        return [f"could not undo the registration of {item.lfn}: {result['failed'][item.lfn]}"]
    return ["registration undone"]
