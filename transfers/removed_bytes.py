"""Deleting the bytes a forced removal left on storage (`catalogue.removed_paths`).

A forced removal holds each removed replica's path; the reaper queues a deletion request for each
hold (`queue_removed`, marked REMOVED_PATH: its LFN is the path), and carries out the ones a cycle
claims together (`delete_removed`): the bytes at each path are deleted once no catalogued replica
stands there, then the path is released, and a registration at it is accepted again. Every step is
idempotent: a reaper killed anywhere leaves the holds (and bytes, perhaps) that another deletes
again when it takes the requests over.

The deletions run while the reaper holds their requests' leases (renewed meanwhile, checked by
`transfers.deletion.delete_bytes` right before the storage call): a reaper that stalled past its
lease there, while another took the request over, freed the path and a new file was registered at
it, would otherwise delete that file's bytes when it resumes. A deletion that fails is retried on a
backoff of at most RETRY_CAP_S, past its attempts too (its path is refused to registrations until
then): only a permanent failure ends the request, and the hold is queued again REQUEUE_S later.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import removed_paths
from catalogue.removed_paths import Target
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


async def delete_removed(db: AsyncDatabase[Document], requests: Sequence[Document],
                         ses: Mapping[str, StorageElement], credentials: Mapping[str, Mapping[str, str]],
                         settings: TransferSettings) -> list[rq.End]:
    """Carry out REMOVED_PATH requests held by this worker, together (`delete_removed_paths`):
    how each ends (the caller ends them, having renewed their leases until then)."""
    ends, by_target = [], defaultdict(list)
    for request in requests:
        if request.get("dest_se") not in ses:
            ends.append(rq.End(request["_id"], {"state": "failed", "error_class": "refused",
                                                "last_error": f"SE {request.get('dest_se')} does not exist"},
                               final=True, attempts=request.get("attempts")))
        else:
            by_target[(request["dest_se"], request["lfn"])].append(request)
    try:
        outcome = await delete_removed_paths(db, by_target, ses, credentials)
    except CairnError as exc:  # the database: the whole batch is tried again
        return ends + [_failed(r, exc, settings) for batch in by_target.values() for r in batch]
    return ends + [_end(r, target, outcome, settings) for target, batch in by_target.items() for r in batch]


def _end(request: Document, target: Target, outcome: RemovedOutcome, settings: TransferSettings) -> rq.End:
    attempt = request.get("attempts")
    if target in outcome.failed:
        return _failed(request, outcome.failed[target], settings)
    if target in outcome.waiting:
        return rq.End(request["_id"], {"state": "queued", "last_error": "the file's removal is still at work",
                                       "error_class": "transient", "not_before": rq.now() + dt.timedelta(
                                           seconds=WAIT_S)}, final=False, attempts=attempt)
    return rq.End(request["_id"], rq.done_fields({"deleted": [target[0]] if target in outcome.deleted else []}),
                  final=True, attempts=attempt)


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


@dataclass
class RemovedOutcome:
    """What became of the holds at `(se, path)` targets: bytes deleted and path released
    (`deleted`), nothing to do (no hold there, or its file stayed: not in any set), the removal
    still at work (`waiting`), or the storage's error (`failed`)."""

    deleted: set[Target] = field(default_factory=set)
    waiting: set[Target] = field(default_factory=set)
    failed: dict[Target, CairnError] = field(default_factory=dict)


async def delete_removed_paths(db: AsyncDatabase[Document], targets: Iterable[Target],
                               ses: Mapping[str, StorageElement], credentials: Mapping[str, Mapping[str, str]]
                               ) -> RemovedOutcome:
    """Delete the bytes removed files left at these `(se, path)` and release the paths, a few
    round trips for all: their holds' states read together (`removed_paths.removal_states`), the
    bytes due deleted per SE in bulk (`transfers.deletion.delete_bytes`, which checks the lease of
    the work running here is held right before each storage call), the deleted paths released in
    one guarded bulk write. Raises the database's errors, and LeaseLost in place of a storage call
    once the lease may have run out (`kernel.lease.check_held`)."""
    outcome = RemovedOutcome()
    due: dict[tuple[str, str], Place] = {}  # delete_bytes's (path, se)
    for (se, path), (state, place) in (await removed_paths.removal_states(db, targets)).items():
        if state == "wait":
            outcome.waiting.add((se, path))
        elif state == "delete" and place is not None:
            if se in ses:
                due[(path, se)] = Place(place.url, path, place.guid)
            else:
                outcome.failed[(se, path)] = CairnError(f"SE {se} does not exist")
    errors = await delete_bytes(due, ses, credentials) if due else {}
    for (path, se), exc in errors.items():
        outcome.failed[(se, path)] = exc
    gone = [removed_paths.RemovedPlace(se, path, place.guid) for (path, se), place in due.items()
            if (path, se) not in errors]
    await removed_paths.release_removed(db, gone)
    outcome.deleted.update((p.se, p.path) for p in gone)
    return outcome
