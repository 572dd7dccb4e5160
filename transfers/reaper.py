"""`cairn daemon reaper`: deletes replicas.

1. Deletion requests: one replica (the request names the SE), or every replica of the file when
   the request explicitly asks for it (no SE named; administrators only, checked by the route).
   A request naming one SE never removes the file's last available replica, nor a locked,
   protected or pinned one (see `transfers.deletion` for the protection contract).
2. Space: when a disk SE with a `space.total_bytes` holds more than `high_water` of it (the sizes
   of the files with a replica there, from the SE's usage record), the reaper deletes
   least-recently-used replicas — by the replica's `accessed` time where something records one,
   else its `created` time — that nothing protects and that are not the last available copy,
   until the SE is down to `low_water`. One reaper at a time works on an SE (a named lease
   "reaper:SE").

Each cycle claims a batch of deletion requests and deletes them together (`transfers.deletion.
delete_replicas`): the files read once, the replicas retired in one guarded bulk write, the bytes
deleted per SE in bulk (S3 DeleteObjects) or a few at once, the records and the SEs' usage
removed in a few bulk writes (`catalogue.replica_removal`, each step idempotent), and the
requests ended in one bulk write guarded by their leases. The bytes forced removals left go the
same way, together (`transfers.removed_bytes.delete_removed`). A reaper killed anywhere leaves
retired replicas (and perhaps removal tokens) whose requests another reaper takes over when
their leases expire: it repeats every step, and nothing is counted twice or lost.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import logging
import time

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES, fetch_files
from catalogue.replica_removal import REMOVAL, being_removed
from catalogue.storage_elements import StorageElement, list_storage_elements
from catalogue.usage import se_bytes
from kernel import lease
from kernel.daemon import Daemon
from kernel.db import Document, iterate
from kernel.errors import CairnError
from kernel.settings import Settings
from transfers import abandoned_uploads, deletion_tags
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.dark_data import StillInUse, delete_dark
from transfers.deletion import Deletion, delete_replicas, protection
from transfers.failures import FILE_REPLACED, backoff_s, classify
from transfers.removed_bytes import REMOVED_PATH, delete_removed, queue_removed

log = logging.getLogger("cairn.reaper")

# An SE's space is looked at once a minute (one read; an eviction, when it is full, reads more).
SPACE_CHECK_S = 60.0
# An eviction reads the SE's replicas once and deletes up to this many reaper batches of the least
# recently used: with one batch per read, emptying 10% of a million-file SE read it 100 times.
EVICTION_BATCHES = 10


async def used_bytes(db: AsyncDatabase[Document], se: str) -> int:
    """Bytes the catalogue places on an SE: its usage record (`catalogue.usage`), which every
    registration, replica change and removal keeps current. Summing the sizes of the files with a
    replica there instead read every such file each minute: 0.6 s of database CPU per 100k
    replicas on FerretDB, a core for ten SEs of a million (`bench/idle.py --of replicas`)."""
    return await se_bytes(db, se)


async def eviction_candidates(db: AsyncDatabase[Document], se: str, *, limit: int) -> list[Document]:
    """Available, unprotected replicas on se that are not their file's last available copy,
    least recently used first, after those an abandoned deletion left retired (`_abandoned`):
    `{lfn, size, last_used}`, the `limit` first of them. One pass over the SE's files, keeping
    only those `limit` (a heap): memory does not grow with the SE."""
    at = dt.datetime.now(dt.UTC)
    kept: list[tuple[float, int, Document]] = []  # the least recently used so far; kept[0] the most recent
    seen = 0
    # files_by_replica_se_lfn
    async for doc in iterate(db[FILES].find({"replicas.se": se}, {"replicas": 1, "size": 1})):
        replicas = doc.get("replicas", [])
        mine = next((r for r in replicas if r.get("se") == se), None)
        if mine is None or not (mine.get("status") == "available" or _abandoned(mine, at)) or protection(mine, at):
            continue
        if not any(r.get("se") != se and r.get("status") == "available" for r in replicas):
            continue
        last_used = mine.get("accessed") or mine.get("created") or at
        # An abandoned one first: unreadable already, its bytes still on the SE and in its usage.
        rank = float("inf") if _abandoned(mine, at) else -last_used.timestamp()
        entry = (rank, seen, {"lfn": doc["_id"], "size": int(doc.get("size", 0)), "last_used": last_used})
        seen += 1
        if len(kept) < limit:
            heapq.heappush(kept, entry)
        elif entry[0] > kept[0][0]:
            heapq.heapreplace(kept, entry)
    return [candidate for _, _, candidate in sorted(kept, key=lambda e: (-e[0], e[1]))]


def _abandoned(replica: Document, at: dt.datetime) -> bool:
    """Retired by a deletion that gave up (its bytes could not be deleted: the SE was down, say)
    longer ago than any live deletion lasts: nothing else would delete it, nor read it again."""
    return replica.get("status") == "unavailable" and bool(replica.get(REMOVAL)) and not being_removed(replica, at)


def _failed(request: Document, error: str, error_class: str) -> rq.End:
    return rq.End(request["_id"], {"state": "failed", "last_error": error, "error_class": error_class}, final=True,
                  attempts=request.get("attempts"))


class Reaper(Daemon):
    name = "reaper"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.transfers
        self.credentials = settings.storage_credentials
        self.idle_sleep_s = settings.transfers.idle_sleep_s
        self._space_checked: dict[str, float] = {}
        self._abandoned_next = 0.0  # when to look for abandoned uploads next (time.monotonic())

    async def run_once(self) -> int:
        ses = {se.name: se for se in await list_storage_elements(self.db)}
        await queue_removed(self.db)  # the bytes forced removals left (`transfers.removed_bytes`)
        claimed_at = time.monotonic()
        claimed = await rc.claim_many(self.db, self.worker, kinds=["delete"], lease_s=self.settings.lease_s,
                                      limit=self.settings.reaper_batch)
        handled = len(claimed)
        if claimed:
            await self._holding(claimed, ses, claimed_at)
        for se in ses.values():
            handled += await self._free_space(se)
        return handled + await self._abandoned_uploads(ses)

    async def _abandoned_uploads(self, ses: dict[str, StorageElement]) -> int:
        """Undo uploads silent for `abandoned_upload_s` (`transfers.abandoned_uploads`): one reaper
        at a time looks (the named lease "reaper:abandoned-uploads"), a few times per period, and
        again at once while a look stopped at its batch."""
        period = self.settings.abandoned_upload_s
        if not period or time.monotonic() < self._abandoned_next:
            return 0
        self._abandoned_next = time.monotonic() + abandoned_uploads.scan_every_s(period)
        held, swept = await lease.under_named_lease(
            self.db, "reaper:abandoned-uploads", self.worker,
            abandoned_uploads.sweep(self.db, ses, self.credentials, period), lease_s=self.settings.lease_s)
        if not held or swept is None:
            return 0
        if swept.more and swept.undone:  # more to look at, and this look got on: look again next cycle
            self._abandoned_next = 0.0
        if swept.undone or swept.failed:
            log.info("abandoned uploads: %d replica(s) undone (%d with their record), %d failed, %d left to a "
                     "live writer", swept.undone, swept.records_removed, swept.failed, swept.left)
        return swept.undone

    async def _holding(self, requests: list[Document], ses: dict[str, StorageElement], claimed_at: float) -> None:
        """The claimed batch's dark files one by one, then its other deletions together
        (`_delete_batch`), renewing the leases of the requests not ended yet while it runs: a batch
        that outlasts its leases (a slow SE, a slow database) would otherwise be taken over while
        this reaper still works on it (two live holders of one removal, a dark file deleted twice).
        A lost lease stops the batch, as if this reaper died; so does a lease this reaper could not
        renew in time (it stalled), before the batch's removals are counted (`kernel.lease.check_held`)."""
        pending = {r["_id"] for r in requests}
        held, _ = await rc.holding(self.db, self.worker, self._delete_claimed(requests, ses, pending),
                                   lambda: pending, lease_s=self.settings.lease_s, since=claimed_at)
        if not held:
            log.warning("lost the lease of some of %d deletion requests; stopping their batch", len(requests))

    async def _delete_claimed(self, requests: list[Document], ses: dict[str, StorageElement],
                              pending: set[str]) -> None:
        """The bytes forced removals left, together (`transfers.removed_bytes`); then dark files
        (a user's deletion of the same replica that met one is done after it, in the batch: a file
        registered there since is not dark, and is the user's to delete); then the rest together."""
        removed = [r for r in requests if r.get(REMOVED_PATH)]
        if removed:  # their leases renewed until they end: their deletion checks the lease is held
            ends = await delete_removed(self.db, removed, ses, self.credentials, self.settings)
            pending.difference_update(r["_id"] for r in removed)
            await rq.end_many(self.db, ends, self.worker)
        batch = []
        for request in requests:
            if request.get(REMOVED_PATH):
                continue
            if runs := deletion_tags.dark_runs(request):
                end = await self._delete_dark(request, ses.get(request.get("dest_se") or ""), runs)
                if end is not None:
                    pending.discard(request["_id"])
                    await rq.end_many(self.db, [end], self.worker)
                    continue
            batch.append(request)
        if batch:
            await self._delete_batch(batch, ses, pending)

    async def _delete_batch(self, requests: list[Document], ses: dict[str, StorageElement],
                            pending: set[str]) -> None:
        every = {r["lfn"] for r in requests if not r.get("dest_se")}
        files = await fetch_files(self.db, every, {"replicas.se": 1}) if every else {}
        ends: list[rq.End] = []
        deletions: list[Deletion] = []
        for request in requests:
            only = request.get("dest_se")
            if not only and request["lfn"] not in files:
                ends.append(_failed(request, f"{request['lfn']}: no such file", "no_such_file"))
                continue
            names = (only,) if only else tuple(r["se"] for r in files[request["lfn"]].get("replicas", []))
            missing = next((name for name in names if name not in ses), None)
            if missing is not None:
                ends.append(_failed(request, f"SE {missing} does not exist", "refused"))
                continue
            # An explicit request for every replica (administrators) may take the last and protected ones.
            deletions.append(Deletion(request["_id"], request["lfn"], names, allow_last=not only,
                                      override_protection=not only, guid=request.get("guid")))
        outcome = await delete_replicas(self.db, deletions, ses, self.credentials)
        by_id = {r["_id"]: r for r in requests}
        ends += [rq.End(rid, rq.done_fields({"deleted": names}), final=True) for rid, names in outcome.done.items()]
        ends += [_failed(by_id[rid], reason, "refused") for rid, reason in outcome.refused.items()]
        ends += [_failed(by_id[rid], reason, FILE_REPLACED) for rid, reason in outcome.replaced.items()]
        ends += [self._failed_deletion(by_id[rid], exc) for rid, exc in outcome.failed.items()]
        pending.difference_update(by_id)  # ending now: no longer renewed
        # A deletion that met one of these since its claim (`requests._tag_deletions`) is not
        # ended here: taken again once its lease runs out, it is done with what was added.
        await rq.end_many(self.db, [dataclasses.replace(end, guard=deletion_tags.untagged_since(by_id[end.request_id]))
                                    for end in ends], self.worker)

    def _failed_deletion(self, request: Document, exc: CairnError) -> rq.End:
        """A deletion whose replicas are retired (unreadable) but whose bytes could not be deleted:
        tried again after a backoff, also once its attempts are used up unless the failure is
        permanent (the SE away a while): giving up would leave the replicas retired for good."""
        failure = classify(exc)
        base_s, cap_s = self.settings.retry_base_s, self.settings.retry_cap_s
        end = rq.failure_end(request, failure, base_s=base_s, cap_s=cap_s)
        if not end.final or failure.permanent:
            return end
        delay = backoff_s(int(request.get("attempts", 1)), base_s=base_s, cap_s=cap_s)
        return rq.End(request["_id"], {"state": "queued", "last_error": failure.message, "error_class": failure.reason,
                                       "not_before": rq.now() + dt.timedelta(seconds=delay)},
                      final=False, attempts=request.get("attempts"))

    async def _delete_dark(self, request: Document, se: StorageElement | None, runs: list[str]) -> rq.End | None:
        """The dark file of each audit run that asked for it (`transfers.dark_data`): the
        request's end, or None when it deletes a replica too and goes on to that (a file kept as
        not dark, say) — or it was deleted and that deletion finds nothing."""
        guard = deletion_tags.untagged_since(request)
        done, deleted, kept = False, False, []
        for run in runs:
            try:
                if se is None:
                    raise StillInUse(f"SE {request.get('dest_se')} does not exist")
                deleted = await delete_dark(self.db, run, request["lfn"], se, self.credentials) or deleted
                done = True
            except StillInUse as exc:
                kept.append(str(exc))
            except CairnError as exc:
                end = rq.failure_end(request, classify(exc), base_s=self.settings.retry_base_s,
                                     cap_s=self.settings.retry_cap_s)
                return dataclasses.replace(end, guard=guard)
        if deletion_tags.deletes_replica(request) and se is not None:
            return None
        if not done:
            return dataclasses.replace(_failed(request, "; ".join(kept), "refused"), guard=guard)
        return rq.End(request["_id"], rq.done_fields({"deleted": [se.name] if deleted and se else []}), final=True,
                      guard=guard)

    async def _evict(self, se: StorageElement, used: int, target: float) -> int:
        """Delete the least recently used unprotected replicas of se until `target` bytes are used:
        chosen from one read of its replicas (up to EVICTION_BATCHES batches' worth), deleted a
        batch at a time."""
        chosen: list[Document] = []
        excess = used - target
        for candidate in await eviction_candidates(self.db, se.name,
                                                   limit=EVICTION_BATCHES * self.settings.reaper_batch):
            if excess <= 0:
                break
            chosen.append(candidate)
            excess -= candidate["size"]
        freed = 0
        for start in range(0, len(chosen), self.settings.reaper_batch):
            if self.stopping:
                break
            batch = chosen[start:start + self.settings.reaper_batch]
            outcome = await delete_replicas(self.db, [Deletion(c["lfn"], c["lfn"], (se.name,)) for c in batch],
                                            {se.name: se}, self.credentials)
            for lfn, reason in outcome.refused.items():
                log.info("kept %s: %s", lfn, reason)
            for lfn, exc in outcome.failed.items():
                log.warning("could not evict %s from %s: %s", lfn, se.name, exc)
            freed += sum(c["size"] for c in batch if outcome.done.get(c["lfn"]))
        return freed

    async def _free_space(self, se: StorageElement) -> int:
        total = se.space.total_bytes
        if se.kind != "disk" or not total or not se.delete_enabled:
            return 0
        if time.monotonic() - self._space_checked.get(se.name, -SPACE_CHECK_S) < SPACE_CHECK_S:
            return 0
        self._space_checked[se.name] = time.monotonic()
        used = await used_bytes(self.db, se.name)
        if used <= se.space.high_water * total:
            return 0
        held, freed = await lease.under_named_lease(self.db, f"reaper:{se.name}", self.worker,
                                                    self._evict(se, used, se.space.low_water * total),
                                                    lease_s=self.settings.lease_s)
        if not held or freed is None:
            return 0
        log.info("SE %s: %d of %d bytes used (high water %.0f%%); freed %d bytes", se.name, used, total,
                 se.space.high_water * 100, freed)
        if freed:
            self._space_checked.pop(se.name, None)  # more may be needed: look again next cycle
        return 1 if freed else 0

