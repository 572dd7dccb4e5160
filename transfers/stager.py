"""`cairn daemon stager`: brings files online from tape SEs.

It takes queued stage requests (kind "stage") and asks the tape SE to bring their file online,
parking them in `staging`; transfer workers park transfers whose only sources are on tape the
same way. It then polls every `staging` request under a lease of its own (the state stays
`staging`, `stage.next_poll` says when), and once the file is online in the tape SE's disk
cache: a stage request is done (the file is released to whoever asked, pinned for the
request's `pin_lifetime_s`, else the setting's), a transfer goes back to the queue, where a
worker now finds its tape source readable (and releases the pin once it has copied the file).
When a user asks to release a done stage request (`cairn requests release`), or cancels a
request that asked for staging, the stager drops that request's pin (or stops its staging);
pins other requests hold on the same copy stay.
"""

from __future__ import annotations

import logging

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.storage_elements import get_storage_element
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.errors import CairnError, NotFound, ServiceUnavailable
from kernel.settings import Settings
from storage_plugins.tape import TapePlugin
from transfers import requests as rq
from transfers.endpoints import tape_endpoint

log = logging.getLogger("cairn.stager")

BATCH = 100


class Stager(Daemon):
    name = "stager"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.transfers
        self.credentials = settings.storage_credentials
        self.idle_sleep_s = min(settings.transfers.idle_sleep_s, settings.transfers.stage_poll_s)

    async def run_once(self) -> int:
        handled = 0
        for _ in range(BATCH):
            request = await rq.claim(self.db, self.worker, kinds=["stage"], lease_s=self.settings.lease_s)
            if request is None:
                break
            await self._start(request)
            handled += 1
        for _ in range(BATCH):
            request = await rq.claim_staging(self.db, self.worker, lease_s=self.settings.lease_s)
            if request is None:
                break
            await self._poll(request)
            handled += 1
        for request in await rq.releases_asked(self.db, BATCH):
            handled += await self._release(request)
        return handled

    async def _release(self, request: Document) -> bool:
        """Drop the pin of a released or cancelled request (idempotent: two stagers may both do it); False
        when the tape SE is unavailable and the release waits for a later cycle."""
        stage = request.get("stage") or {}
        try:
            plugin, url = await self._tape_url(stage["se"], request["lfn"], stage.get("url"))
            await plugin.release(url, request_id=stage["request_id"])
        except NotFound:
            outcome = "released"  # the SE or the file is gone, and the pin with it
        except ServiceUnavailable as exc:
            log.warning("%s: release of its pin postponed: %s", request["lfn"], exc.message)
            return False
        except (CairnError, KeyError) as exc:
            outcome = f"not released: {exc}"
            log.warning("%s: %s", request["lfn"], outcome)
        else:
            outcome = "released"
        await rq.released(self.db, request["_id"], outcome)
        return True

    def _lifetime(self, request: Document) -> float:
        return float(request.get("pin_lifetime_s") or self.settings.pin_lifetime_s)

    async def _tape_url(self, se_name: str, lfn: str, registered_url: str | None) -> tuple[TapePlugin, str]:
        se = await get_storage_element(self.db, se_name)
        return tape_endpoint(se, lfn, credentials=self.credentials, registered_url=registered_url)

    async def _start(self, request: Document) -> None:
        """A new stage request: issue the bring-online request and wait in `staging`."""
        lfn, se_name = request["lfn"], request["dest_se"]
        file_doc = (await fetch_files(self.db, [lfn])).get(lfn)
        replica = next((r for r in (file_doc or {}).get("replicas", []) if r.get("se") == se_name), None)
        if file_doc is None or replica is None:
            reason = "no such file" if file_doc is None else f"no replica on {se_name}"
            await rq.fail(self.db, request["_id"], self.worker, f"{lfn}: {reason}", "no_source")
            return
        try:
            plugin, url = await self._tape_url(se_name, lfn, replica.get("url"))
            stage_id = await plugin.bring_online([url], pin_lifetime_s=self._lifetime(request))
        except CairnError as exc:
            await rq.fail(self.db, request["_id"], self.worker, exc.message, "staging_failed")
            return
        await rq.park_for_staging(self.db, request["_id"], self.worker, stage={
            "se": se_name, "url": url, "request_id": stage_id, "next_poll": rq.now()})

    async def _poll(self, request: Document) -> None:
        """A `staging` request whose poll is due: online → release or requeue; else look again later."""
        stage = request.get("stage") or {}
        rid = request["_id"]
        try:
            plugin, url = await self._tape_url(stage["se"], request["lfn"], stage.get("url"))
            try:
                status = (await plugin.poll_bring_online(stage["request_id"])).get(url, "failed")
            except NotFound:
                # The tape system forgot the request (restarted): ask again.
                stage_id = await plugin.bring_online([url], pin_lifetime_s=self._lifetime(request))
                await rq.poll_staging_later(self.db, rid, self.worker, delay_s=self.settings.stage_poll_s)
                await self.db[rq.REQUESTS].update_one({"_id": rid}, {"$set": {"stage.request_id": stage_id}})
                return
        except (CairnError, KeyError) as exc:
            await rq.staging_failed(self.db, rid, self.worker, f"staging {request['lfn']}: {exc}")
            return
        if status == "online":
            await rq.staged(self.db, rid, self.worker, done=request["kind"] == "stage")
            log.info("%s online on %s", request["lfn"], stage["se"])
        elif status == "queued":
            await rq.poll_staging_later(self.db, rid, self.worker, delay_s=self.settings.stage_poll_s)
        else:
            await rq.staging_failed(self.db, rid, self.worker, f"{request['lfn']}: bring-online ended {status}")
