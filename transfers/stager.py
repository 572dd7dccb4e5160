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

A cycle claims its requests in batches (`claim_many`), reads their files in one query and the
SEs once, and writes the new requests' ends (parked in `staging`, or failed) in one guarded bulk
write, the polls' outcomes (online, not yet) with one guarded update per outcome, and the polls
that ended a request (failed) or asked again in one more bulk (`requests.end_many`).
"""

from __future__ import annotations

import datetime as dt
import logging

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.storage_elements import StorageElement, list_storage_elements
from catalogue.storage_paths import storage_lfn
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.errors import CairnError, NotFound, ServiceUnavailable
from kernel.settings import Settings
from storage_plugins.tape import TapePlugin
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.endpoints import tape_endpoint
from transfers.failures import classify, file_replaced

log = logging.getLogger("cairn.stager")

BATCH = 100
RELEASE_LOOKS = 4  # looks for releases a cycle, each leaving out the tape SEs found away


class Stager(Daemon):
    name = "stager"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.transfers
        self.credentials = settings.storage_credentials
        self.idle_sleep_s = min(settings.transfers.idle_sleep_s, settings.transfers.stage_poll_s)
        self._ses: dict[str, StorageElement] = {}
        # The recalls this cycle asked for, by request, until the request's end records them.
        self._asked: dict[str, tuple[TapePlugin, str, str]] = {}

    async def run_once(self) -> int:
        self._ses = {se.name: se for se in await list_storage_elements(self.db)}  # once per cycle
        handled = 0
        claimed = await rc.claim_many(self.db, self.worker, kinds=["stage"], lease_s=self.settings.lease_s,
                                      limit=BATCH)
        files = await fetch_files(self.db, {request["lfn"] for request in claimed}) if claimed else {}
        started = [await self._start(request, files.get(request["lfn"])) for request in claimed]
        await self._end(started, "active")
        handled += len(claimed)
        staging = await rc.claim_staging_many(self.db, self.worker, lease_s=self.settings.lease_s, limit=BATCH)
        outcomes: dict[str, list[str]] = {"done": [], "requeued": [], "poll_later": []}
        ended: list[rq.End] = []
        for request in staging:
            outcome = await self._poll(request)
            if isinstance(outcome, rq.End):
                ended.append(outcome)
            else:
                outcomes[outcome].append(request["_id"])
            handled += 1
        await rq.staged_many(self.db, self.worker, **outcomes, delay_s=self.settings.stage_poll_s)
        await self._end(ended, "staging")
        return handled + await self._releases()

    async def _releases(self) -> int:
        """Release what was asked; a tape SE found away is left out of the next look (a few a
        cycle), so that its releases, waiting for it, do not hold up the other tapes' behind them."""
        handled, away = 0, set[str]()
        for _ in range(RELEASE_LOOKS):
            found_away = False
            for request in await rq.releases_asked(self.db, BATCH, skip_ses=sorted(away)):
                if (se := (request.get("stage") or {}).get("se")) in away:
                    continue
                if await self._release(request):
                    handled += 1
                else:
                    away.add(str(se))
                    found_away = True
            if not found_away:
                break
        return handled

    async def _end(self, ends: list[rq.End], from_state: str) -> None:
        """End held requests (`requests.end_many`); a recall asked for a request that is no longer
        this stager's (cancelled meanwhile, or taken over after its lease ran out) is released at
        once: its end, which would have recorded it, did not take, so nobody else would."""
        asked = {end.request_id: self._asked.pop(end.request_id) for end in ends if end.request_id in self._asked}
        ended = await rq.end_many(self.db, ends, self.worker, from_state=from_state)
        for request_id, (plugin, url, stage_id) in asked.items():
            if request_id not in ended:
                try:
                    await plugin.release(url, request_id=stage_id)
                except CairnError as exc:
                    log.warning("%s: recall %s not released (its pin lapses): %s", url, stage_id, exc.message)

    async def _bring_online(self, request: Document, plugin: TapePlugin, url: str) -> str:
        """Ask the tape SE to recall url for request (noted until the request's end records it)."""
        stage_id = await plugin.bring_online([url], pin_lifetime_s=self._lifetime(request))
        self._asked[request["_id"]] = (plugin, url, stage_id)
        return stage_id

    async def _release(self, request: Document) -> bool:
        """Drop the pin of a released or cancelled request (idempotent: two stagers may both do it); False
        when the tape SE is unavailable and the release waits for a later cycle."""
        stage = request.get("stage") or {}
        try:
            plugin, url = await self._tape_url(stage["se"], stage.get("path") or request["lfn"], stage.get("url"))
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

    async def _tape_url(self, se_name: str, path: str, registered_url: str | None) -> tuple[TapePlugin, str]:
        """The tape plugin and URL of the replica whose bytes lie at `path`'s URL on SE se_name."""
        se = self._ses.get(se_name)
        if se is None:
            raise NotFound(f"SE {se_name} does not exist")
        return tape_endpoint(se, path, credentials=self.credentials, registered_url=registered_url)

    async def _start(self, request: Document, file_doc: Document | None) -> rq.End:
        """A new stage request (its file as just read): issue the bring-online request; returns
        the request's end, waiting in `staging` (or failed)."""
        lfn, se_name = request["lfn"], request["dest_se"]
        replica = next((r for r in (file_doc or {}).get("replicas", []) if r.get("se") == se_name), None)
        if file_doc is None or replica is None:
            reason = "no such file" if file_doc is None else f"no replica on {se_name}"
            return _failed(request, f"{lfn}: {reason}", "no_source")
        if replaced := file_replaced(request, file_doc):
            return _failed(request, replaced.message, replaced.reason)
        try:
            plugin, url = await self._tape_url(se_name, storage_lfn(lfn, replica), replica.get("url"))
            stage_id = await self._bring_online(request, plugin, url)
        except ServiceUnavailable as exc:  # the tape system is away: asked again after a backoff
            return rq.failure_end(request, classify(exc), base_s=self.settings.retry_base_s,
                                  cap_s=self.settings.retry_cap_s)
        except CairnError as exc:
            return _failed(request, exc.message, "staging_failed")
        return rq.End(request["_id"], {"state": "staging", "stage": {
            "se": se_name, "url": url, "path": storage_lfn(lfn, replica), "request_id": stage_id,
            "next_poll": rq.now()}}, final=False,
            attempts=request.get("attempts"))

    async def _ask_again(self, request: Document, plugin: TapePlugin, url: str, fields: Document) -> rq.End:
        """A new bring-online request for a staging request's file, polled after stage_poll_s."""
        stage_id = await self._bring_online(request, plugin, url)
        next_poll = rq.now() + dt.timedelta(seconds=self.settings.stage_poll_s)
        return rq.End(request["_id"], {**fields, "stage.request_id": stage_id, "stage.next_poll": next_poll},
                      final=False, attempts=request.get("attempts"))

    async def _poll(self, request: Document) -> str | rq.End:
        """A `staging` request whose poll is due: online → "done" (a stage request) or "requeued"
        (a transfer); not yet → "poll_later"; else its end (failed, or asked again)."""
        stage = request.get("stage") or {}
        try:
            plugin, url = await self._tape_url(stage["se"], stage.get("path") or request["lfn"], stage.get("url"))
            try:
                status = (await plugin.poll_bring_online(stage["request_id"])).get(url, "failed")
            except NotFound:
                # The tape system forgot the request (restarted): ask again.
                return await self._ask_again(request, plugin, url, {})
            recalls = int(stage.get("recalls") or 0)
            if status == "evicted" and recalls < int(request.get("max_attempts") or rq.DEFAULT_MAX_ATTEMPTS):
                # Staged, then its pin lapsed before a poll saw it online (the stager or the database
                # was away longer than the pin): the file is still on tape, so it is recalled again.
                log.warning("%s: its pin lapsed before it was seen online; staging it again", request["lfn"])
                return await self._ask_again(request, plugin, url, {"stage.recalls": recalls + 1})
        except ServiceUnavailable as exc:  # the tape system is away: its request is polled again later
            log.warning("%s: poll postponed: %s", request["lfn"], exc.message)
            return "poll_later"
        except (CairnError, KeyError) as exc:
            return _failed(request, f"staging {request['lfn']}: {exc}", "staging_failed")
        if status == "online":
            log.info("%s online on %s", request["lfn"], stage["se"])
            return "done" if request["kind"] == "stage" else "requeued"
        if status == "queued":
            return "poll_later"
        return _failed(request, f"{request['lfn']}: bring-online ended {status}", "staging_failed")


def _failed(request: Document, error: str, error_class: str) -> rq.End:
    return rq.End(request["_id"], {"state": "failed", "last_error": error, "error_class": error_class}, final=True,
                  attempts=request.get("attempts"))
