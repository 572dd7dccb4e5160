"""Deleting the bytes a forced removal left on storage (`catalogue.removed_paths`).

A forced removal holds each removed replica's path; the reaper queues a deletion request for each
hold (`queue_removed`, marked REMOVED_PATH: its LFN is the path), and carries it out
(`delete_removed`): the bytes at the path are deleted once no catalogued replica stands there,
then the path is released, and a registration at it is accepted again.
"""

from __future__ import annotations

from collections.abc import Mapping

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import removed_paths
from catalogue.storage_elements import StorageElement
from kernel.db import Document
from kernel.errors import CairnError
from kernel.settings import TransferSettings
from transfers import queueing
from transfers import requests as rq
from transfers.deletion import Place, delete_bytes
from transfers.failures import classify

REMOVED_PATH = "removed_path"  # a deletion request's flag: the bytes of a removed file at the path `lfn`
REQUESTER = "cairn:removed-files"
QUEUE_BATCH = 1000
WAIT_S = 30.0  # a removal still at work on the file: look again then


async def queue_removed(db: AsyncDatabase[Document]) -> int:
    """Queue a deletion request for each hold whose bytes are due for deletion (a few round trips)."""
    due = await removed_paths.due(db, QUEUE_BATCH)
    if not due:
        return 0
    await queueing.submit(db, "delete", [{"lfn": p.path, "dest_se": p.se, REMOVED_PATH: True} for p in due],
                          requester=REQUESTER)
    await removed_paths.queued(db, due)
    return len(due)


async def delete_removed(db: AsyncDatabase[Document], request: Document, se: StorageElement | None,
                         credentials: Mapping[str, Mapping[str, str]], worker: str,
                         settings: TransferSettings) -> None:
    """Carry out one REMOVED_PATH request held by this worker."""
    if se is None:
        await rq.fail(db, request["_id"], worker, f"SE {request.get('dest_se')} does not exist", "refused")
        return
    try:
        deleted = await delete_at(db, se, request["lfn"], credentials)
    except CairnError as exc:
        await rq.fail_or_retry(db, request, worker, classify(exc), base_s=settings.retry_base_s,
                               cap_s=settings.retry_cap_s)
        return
    if deleted is None:
        await rq.retry_later(db, request["_id"], worker, "the file's removal is still at work", delay_s=WAIT_S)
    else:
        await rq.complete(db, request["_id"], worker, {"deleted": [se.name] if deleted else []})


async def delete_at(db: AsyncDatabase[Document], se: StorageElement, path: str,
                    credentials: Mapping[str, Mapping[str, str]]) -> bool | None:
    """Delete the bytes a removed file left at `path` on se and release the path: True; False
    when there was nothing to do (no hold there, or its file stayed); None when its removal is
    still at work. Raises the storage's error."""
    state, place = await removed_paths.removal_state(db, se.name, path)
    if state == "wait":
        return None
    if state == "released" or place is None:
        return False
    target = (place.path, se.name)
    errors = await delete_bytes({target: Place(place.url, place.path, place.guid)}, {se.name: se}, credentials)
    if target in errors:
        raise errors[target]
    await removed_paths.release_removed(db, place)
    return True
