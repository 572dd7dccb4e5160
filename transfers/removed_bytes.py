"""Deleting the bytes a forced removal left on storage (`catalogue.removed_paths`).

A forced removal holds each removed replica's path; the reaper queues a deletion request for each
hold (`queue_removed`, marked REMOVED_PATH: its LFN is the path), and carries it out
(`delete_removed`): the bytes at the path are deleted once no catalogued replica stands there,
then the path is released, and a registration at it is accepted again.

The deletion runs while the reaper holds its request's lease (renewed meanwhile, checked by
`transfers.deletion.delete_bytes` right before the storage call): a reaper that stalled past its
lease there, while another took the request over, freed the path and a new file was registered at
it, would otherwise delete that file's bytes when it resumes. A deletion that fails is retried on a
backoff of at most RETRY_CAP_S, past its attempts too (its path is refused to registrations until
then): only a permanent failure ends the request, and the hold is queued again REQUEUE_S later.
"""

from __future__ import annotations

import datetime as dt
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
from transfers.failures import backoff_s, classify

REMOVED_PATH = "removed_path"  # a deletion request's flag: the bytes of a removed file at the path `lfn`
REQUESTER = "cairn:removed-files"
QUEUE_BATCH = 1000
WAIT_S = 30.0  # a removal still at work on the file: look again then
RETRY_CAP_S = 300.0  # the longest wait between two tries to delete the bytes (a path refused meanwhile)


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
                         credentials: Mapping[str, Mapping[str, str]], settings: TransferSettings) -> rq.End:
    """Carry out one REMOVED_PATH request held by this worker: how it ends (the caller ends it,
    having renewed its lease until then)."""
    attempt = request.get("attempts")
    if se is None:
        return rq.End(request["_id"], {"state": "failed", "last_error": f"SE {request.get('dest_se')} does not exist",
                                       "error_class": "refused"}, final=True, attempts=attempt)
    try:
        deleted = await delete_at(db, se, request["lfn"], credentials)
    except CairnError as exc:
        return _failed(request, exc, settings)
    if deleted is None:
        return rq.End(request["_id"], {"state": "queued", "last_error": "the file's removal is still at work",
                                       "error_class": "transient", "not_before": rq.now() + dt.timedelta(
                                           seconds=WAIT_S)}, final=False, attempts=attempt)
    return rq.End(request["_id"], rq.done_fields({"deleted": [se.name] if deleted else []}), final=True,
                  attempts=attempt)


def _failed(request: Document, exc: CairnError, settings: TransferSettings) -> rq.End:
    """Tried again after a backoff (capped at RETRY_CAP_S), past its attempts too, unless the
    failure is permanent: giving up would leave the path refused until the hold is queued again."""
    failure = classify(exc)
    cap_s = min(settings.retry_cap_s, RETRY_CAP_S)
    end = rq.failure_end(request, failure, base_s=settings.retry_base_s, cap_s=cap_s)
    if not end.final or failure.permanent:
        return end
    delay = backoff_s(int(request.get("attempts", 1)), base_s=settings.retry_base_s, cap_s=cap_s)
    return rq.End(request["_id"], {"state": "queued", "last_error": failure.message, "error_class": failure.reason,
                                   "not_before": rq.now() + dt.timedelta(seconds=delay)},
                  final=False, attempts=request.get("attempts"))


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
