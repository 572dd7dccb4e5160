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

Each bring-online request is asked under an id noted on the request first (`recall`), so a
stager that dies or loses the lease between the ask and the request's end leaves nothing pinned
that nobody knows: the next holder asks again under that id (the tape system answers the recall
it has), a cancel releases it. The leases of a batch are renewed while its recalls and polls run.

A cycle claims its requests in batches (`claim_many`), reads their files in one query and the
SEs once, and writes the new requests' ends (parked in `staging`, or failed) in one guarded bulk
write, the polls' outcomes (online, not yet) with one guarded update per outcome, and the polls
that ended a request (failed) or asked again in one more bulk (`requests.end_many`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.storage_elements import StorageElement, list_storage_elements
from catalogue.storage_paths import storage_lfn
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.errors import CairnError, NotFound, ServiceUnavailable
from kernel.lease import LeaseLost
from kernel.settings import Settings
from storage_plugins.tape import TapePlugin
from transfers import cancellation, recalls
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
        self._asked: dict[str, Document] = {}  # the recalls the batch at work asked, by request (`_holding`)

    async def run_once(self) -> int:
        self._ses = {se.name: se for se in await list_storage_elements(self.db)}  # once per cycle
        claimed_at = time.monotonic()
        claimed = await rc.claim_many(self.db, self.worker, kinds=["stage"], lease_s=self.settings.lease_s,
                                      limit=BATCH)
        if claimed:
            await self._holding(self._start_all, claimed, claimed_at, "active")
        polled_at = time.monotonic()
        staging = await rc.claim_staging_many(self.db, self.worker, lease_s=self.settings.lease_s, limit=BATCH)
        if staging:
            await self._holding(self._poll_all, staging, polled_at, "staging")
        return len(claimed) + len(staging) + await self._releases()

    async def _holding(self, work: Callable[[list[Document], set[str]], Coroutine[Any, Any, None]],
                       requests: list[Document], since: float, state: str) -> None:
        """Run `work` on held requests renewing their leases until it ends them (`request_claims.
        holding`): recalls asked one by one can outlast a lease, and a second stager taking the
        requests over meanwhile asked for them again. A lease found lost stops the work, as if
        this stager had died (the recalls it asked are noted on their requests: `_bring_online`)."""
        pending = {r["_id"] for r in requests}
        self._asked = {}
        try:
            held, _ = await rc.holding(self.db, self.worker, work(requests, pending), lambda: pending,
                                       lease_s=self.settings.lease_s, since=since, state=state)
        finally:
            asked, self._asked = self._asked, {}
            await self._release_cancelled(asked)
        if not held:
            log.warning("lost the lease of some of %d %s requests; stopping their batch", len(requests), state)

    async def _release_cancelled(self, asked: Mapping[str, Document]) -> None:
        """Release the recalls this batch asked for requests cancelled meanwhile: the cancel's
        release may have reached the tape system before the ask (a noted id asked again after it
        found nothing to release), which then made the recall, pinned for its lifetime. Looked at
        after the asks (one read): a cancel after the look asks its release after them."""
        if not asked:
            return
        for rid in sorted(await recalls.cancelled_among(self.db, list(asked))):
            recall = asked[rid]
            try:
                plugin, url = await self._tape_url(recall["se"], recall["path"], recall["url"])
                await plugin.release(url, request_id=recall["request_id"])
            except NotFound:
                continue
            except CairnError as exc:
                log.warning("%s: the recall asked after its cancel could not be released: %s", rid, exc)

    async def _start_all(self, claimed: list[Document], pending: set[str]) -> None:
        files = await fetch_files(self.db, {request["lfn"] for request in claimed})
        started = [await self._start(request, files.get(request["lfn"])) for request in claimed]
        pending.clear()  # ending now: no longer renewed
        await rq.end_many(self.db, started, self.worker, from_state="active")

    async def _poll_all(self, staging: list[Document], pending: set[str]) -> None:
        outcomes: dict[str, list[str]] = {"done": [], "requeued": [], "poll_later": []}
        ended: list[rq.End] = []
        for request in staging:
            outcome = await self._poll(request)
            if isinstance(outcome, rq.End):
                ended.append(outcome)
            else:
                outcomes[outcome].append(request["_id"])
        pending.clear()
        await rq.staged_many(self.db, self.worker, **outcomes, delay_s=self.settings.stage_poll_s)
        await rq.end_many(self.db, ended, self.worker, from_state="staging")

    async def _releases(self) -> int:
        """Release what was asked; a tape SE found away is left out of the next look (a few a
        cycle), so that its releases, waiting for it, do not hold up the other tapes' behind them."""
        handled, away = 0, set[str]()
        for _ in range(RELEASE_LOOKS):
            found_away = False
            for request in await cancellation.releases_asked(self.db, BATCH, skip_ses=sorted(away)):
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

    async def _bring_online(self, request: Document, plugin: TapePlugin, url: str, state: str,
                            place: Mapping[str, str]) -> str:
        """Ask the tape SE to recall url for a held request, under an id noted on the request
        first (`requests.note_recall`; `place`: its `se` and `path`): a stager that dies (or
        loses the lease) between the ask and the request's end leaves the id there, and the next
        holder asks again under it — the tape system answers the recall it has, no second pin —
        or a cancel releases it. An id noted so for the same URL is asked again, not a new one."""
        noted = request.get("recall") or {}
        stage_id = noted.get("request_id") if noted.get("url") == url else None
        # A noted id is noted again (a guarded write, as a new one): not asked once the request
        # was cancelled or taken over. One cancelled after this write is released after the ask
        # (`_release_cancelled`).
        recall = {**place, "url": url, "request_id": stage_id or uuid.uuid4().hex}
        stage_id = recall["request_id"]
        if not await recalls.note_recall(self.db, request["_id"], self.worker, state, recall):
            raise LeaseLost(f"stage request {request['_id']} is no longer this stager's")
        self._asked[request["_id"]] = {**place, "url": url, "request_id": stage_id}  # asked, or about to be
        return await plugin.bring_online([url], pin_lifetime_s=self._lifetime(request), request_id=stage_id)

    async def _release(self, request: Document) -> bool:
        """Drop the pins of a released or cancelled request: its recall's, and one noted but not
        recorded (idempotent: two stagers may both do it); False when the tape SE is unavailable
        and the release waits for a later cycle."""
        asked = {doc["request_id"]: doc for doc in (request.get("stage") or {}, request.get("recall") or {})
                 if doc.get("request_id")}
        try:
            if not asked:
                raise KeyError("request_id")
            for stage_id, stage in asked.items():
                plugin, url = await self._tape_url(stage["se"], stage.get("path") or request["lfn"], stage.get("url"))
                await plugin.release(url, request_id=stage_id)
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
        await cancellation.released(self.db, request["_id"], outcome)
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
            path = storage_lfn(lfn, replica)
            plugin, url = await self._tape_url(se_name, path, replica.get("url"))
            stage_id = await self._bring_online(request, plugin, url, "active", {"se": se_name, "path": path})
        except ServiceUnavailable as exc:  # the tape system is away: asked again after a backoff
            return rq.failure_end(request, classify(exc), base_s=self.settings.retry_base_s,
                                  cap_s=self.settings.retry_cap_s)
        except CairnError as exc:
            return _failed(request, exc.message, "staging_failed")
        return rq.End(request["_id"], {"state": "staging", "recall": None, "stage": {
            "se": se_name, "url": url, "path": path, "request_id": stage_id, "next_poll": rq.now()}},
            final=False, attempts=request.get("attempts"))

    async def _ask_again(self, request: Document, plugin: TapePlugin, url: str, fields: Document) -> rq.End:
        """A new bring-online request for a staging request's file, polled after stage_poll_s."""
        stage = request.get("stage") or {}
        stage_id = await self._bring_online(request, plugin, url, "staging",
                                            {"se": stage.get("se", ""), "path": stage.get("path") or request["lfn"]})
        next_poll = rq.now() + dt.timedelta(seconds=self.settings.stage_poll_s)
        return rq.End(request["_id"], {**fields, "recall": None, "stage.request_id": stage_id,
                                       "stage.next_poll": next_poll}, final=False, attempts=request.get("attempts"))

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
