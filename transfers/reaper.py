"""`cairn daemon reaper`: deletes replicas.

1. Deletion requests: one replica (the request names the SE), or every replica of the file when
   the request explicitly asks for it (no SE named; administrators only, checked by the route).
   A request naming one SE never removes the file's last available replica, nor a locked,
   protected or pinned one (see `transfers.deletion` for the protection contract).
2. Space: when a disk SE with a `space.total_bytes` holds more than `high_water` of it (the sum of
   its replicas' file sizes in the catalogue), the reaper deletes least-recently-used replicas
   — by the replica's `accessed` time where something records one, else its `created` time —
   that nothing protects and that are not the last available copy, until the SE is down to
   `low_water`. One reaper at a time works on an SE (a named lease "reaper:SE").

Deletion requests go in batches: claimed together, the files of "every replica" requests read
in one query, each replica retired (a guarded compare-and-set, one by one) and its bytes
deleted, then the batch's retired records pulled in one catalogue call and its requests ended
in one bulk write. A reaper killed in between leaves retired replicas whose requests another
reaper takes over: retiring, deleting and pulling again are idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES, fetch_files
from catalogue.replicas import pull_replicas
from catalogue.storage_elements import StorageElement, list_storage_elements
from kernel import lease
from kernel.daemon import Daemon
from kernel.db import Document, database_errors
from kernel.errors import CairnError
from kernel.settings import Settings
from transfers import requests as rq
from transfers.dark_data import StillInUse, delete_dark
from transfers.deletion import Refused, delete_replica, delete_retired_bytes, protection, retire
from transfers.failures import classify

log = logging.getLogger("cairn.reaper")

BATCH = 200
# Summing an SE's replicas is a scan of its part of the catalogue: not every cycle.
SPACE_CHECK_S = 60.0


async def used_bytes(db: AsyncDatabase[Document], se: str) -> int:
    """Bytes the catalogue places on an SE: the sizes of the files with a replica there (a file
    has at most one replica per SE)."""
    with database_errors():
        # files_by_replica_se_lfn
        cursor = await db[FILES].aggregate([
            {"$match": {"replicas.se": se}},
            {"$group": {"_id": None, "bytes": {"$sum": "$size"}}},
        ])
        rows = await cursor.to_list()
    return int(rows[0]["bytes"]) if rows else 0


async def eviction_candidates(db: AsyncDatabase[Document], se: str, *, limit: int) -> list[Document]:
    """Available, unprotected replicas on se that are not their file's last available copy,
    least recently used first: `{lfn, size, last_used}`."""
    with database_errors():
        cursor = db[FILES].find({"replicas.se": se}, {"replicas": 1, "size": 1})  # files_by_replica_se_lfn
        docs = await cursor.to_list()
    at = dt.datetime.now(dt.UTC)
    out: list[Document] = []
    for doc in docs:
        replicas = doc.get("replicas", [])
        mine = next((r for r in replicas if r.get("se") == se), None)
        if mine is None or mine.get("status") != "available" or protection(mine, at):
            continue
        if not any(r.get("se") != se and r.get("status") == "available" for r in replicas):
            continue
        out.append({"lfn": doc["_id"], "size": int(doc.get("size", 0)),
                    "last_used": mine.get("accessed") or mine.get("created") or at})
    out.sort(key=lambda c: c["last_used"])
    return out[:limit]


class Reaper(Daemon):
    name = "reaper"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.transfers
        self.credentials = settings.storage_credentials
        self.idle_sleep_s = settings.transfers.idle_sleep_s
        self._space_checked: dict[str, float] = {}

    async def run_once(self) -> int:
        ses = {se.name: se for se in await list_storage_elements(self.db)}
        claimed = await rq.claim_many(self.db, self.worker, kinds=["delete"], lease_s=self.settings.lease_s,
                                      limit=BATCH)
        handled = len(claimed)
        if claimed:
            await self._delete_batch(claimed, ses)
        for se in ses.values():
            handled += await self._free_space(se)
        return handled

    async def _delete_batch(self, requests: list[Document], ses: dict[str, StorageElement]) -> None:
        every = {r["lfn"] for r in requests if not r.get("dest_se") and not r.get("audit_run")}
        files = await fetch_files(self.db, every, {"replicas.se": 1}) if every else {}
        deleted: dict[str, list[str]] = {}
        pulls: list[tuple[str, str]] = []
        for request in requests:
            if request.get("audit_run"):
                await self._delete_dark(request, ses.get(request.get("dest_se") or ""))
                continue
            only = request.get("dest_se")
            if not only and request["lfn"] not in files:
                await rq.fail(self.db, request["_id"], self.worker, f"{request['lfn']}: no such file", "no_such_file")
                continue
            targets = [only] if only else [r["se"] for r in files[request["lfn"]].get("replicas", [])]
            gone: list[str] = []
            if await self._retire_and_delete(request, targets, ses, gone):
                deleted[request["_id"]] = gone
            pulls += [(request["lfn"], name) for name in gone]
        # Through the catalogue, so that the SEs' usage loses the replicas too.
        if pulls:
            await pull_replicas(self.db, pulls, status="unavailable")
        await rq.complete_many(self.db, {rid: {"deleted": names} for rid, names in deleted.items()}, self.worker)

    async def _retire_and_delete(self, request: Document, targets: list[str], ses: dict[str, StorageElement],
                                 gone: list[str]) -> bool:
        """Retire each target replica and delete its bytes, adding its SE to `gone` (records to
        pull); False when the request ended here (refused: failed; a storage error: retried)."""
        lfn, only = request["lfn"], request.get("dest_se")
        try:
            for name in targets:
                se = ses.get(name)
                if se is None:
                    raise Refused(f"SE {name} does not exist")
                replica = await retire(self.db, lfn, name, allow_last=only is None, override_protection=only is None,
                                       inside=se)
                if replica is not None:
                    await delete_retired_bytes(lfn, se, replica, self.credentials)
                    gone.append(name)
        except Refused as exc:
            await rq.fail(self.db, request["_id"], self.worker, str(exc), "refused")
            return False
        except CairnError as exc:
            await rq.fail_or_retry(self.db, request, self.worker, classify(exc), base_s=self.settings.retry_base_s,
                                   cap_s=self.settings.retry_cap_s)
            return False
        return True

    async def _delete_dark(self, request: Document, se: StorageElement | None) -> None:
        """A dark file an operator asked to delete (`transfers.dark_data`)."""
        try:
            if se is None:
                raise StillInUse(f"SE {request.get('dest_se')} does not exist")
            gone = await delete_dark(self.db, request["audit_run"], request["lfn"], se, self.credentials)
        except StillInUse as exc:
            await rq.fail(self.db, request["_id"], self.worker, str(exc), "refused")
        except CairnError as exc:
            await rq.fail_or_retry(self.db, request, self.worker, classify(exc), base_s=self.settings.retry_base_s,
                                   cap_s=self.settings.retry_cap_s)
        else:
            await rq.complete(self.db, request["_id"], self.worker, {"deleted": [se.name] if gone else []})

    async def _evict(self, se: StorageElement, used: int, target: float) -> int:
        """Delete the least recently used unprotected replicas of se until `target` bytes are used."""
        freed = 0
        for candidate in await eviction_candidates(self.db, se.name, limit=self.settings.reaper_batch):
            if used - freed <= target or self.stopping:
                break
            try:
                if await delete_replica(self.db, candidate["lfn"], se, self.credentials, allow_last=False):
                    freed += candidate["size"]
            except Refused as exc:
                log.info("kept %s", exc)
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

