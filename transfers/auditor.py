"""`cairn daemon auditor`: compares each SE's storage with the catalogue (see `audit_compare`).

Each cycle the auditor takes the open audit runs (`audit_runs`), queuing one first for every SE
whose last run is older than `audit.interval_s` when that is set, and does each under the named
lease "auditor:SE" — one auditor per SE at a time, any number of auditors. A run found lost is
checked once more on storage (a stat) before the replica is marked `lost`
(`catalogue.replica_health.mark_lost`: the rules locking it copy it again); a lost replica whose
file has no other available copy is recorded so (`no_copy`). Dark files are only recorded: an
operator asks for their deletion (`request_dark_deletion`), which the reaper does.

A size or checksum mismatch is checked once more on the storage itself (a stat; for a checksum,
the SE's checksum of the file) before the replica is marked `bad`
(`catalogue.replica_health.mark_bad`): its bytes are not the file's, so readers skip it and it
is listed for triage, as when a transfer or a download finds a checksum wrong. A mismatch that no
longer holds, or that storage cannot confirm, is recorded unmarked. With `audit.checksums` set,
a live listing asks the SE for the adler32 of every matched file where its plugin has the
server compute it (XRootD's checksum query, WebDAV, S3): one request per file.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.moved_paths import held_on
from catalogue.replica_health import mark_bad, mark_lost_many, other_copies, replicas_on
from catalogue.replica_urls import VARIANT_MARK, variant_url
from catalogue.storage_elements import StorageElement, get_storage_element, list_storage_elements
from kernel import lease
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.errors import CairnError, Conflict, InvalidInput
from kernel.settings import AuditSettings, Settings
from storage_plugins.base import StoragePlugin
from storage_plugins.registry import plugin_for
from transfers import audit_runs, queueing
from transfers.audit_compare import Findings, StorageEntry, compare, dump_lines, lfn_of, sorted_dump
from transfers.audit_variants import Variants, registered_tags
from transfers.endpoints import endpoints

log = logging.getLogger("cairn.auditor")
ENTRY_BATCH = 1000
PROGRESS_S = 2.0
DARK_ACTIVITY = "dark-data"
MISMATCHES = ("size_mismatch", "checksum_mismatch")


async def _listing(plugin: StoragePlugin, root: str, base: str) -> AsyncIterator[StorageEntry]:
    async for info in plugin.walk(root):
        lfn = lfn_of(info.url, base)
        yield StorageEntry(lfn if lfn is not None else info.url, info.size, info.mtime, info.adler32)


async def _without(stream: AsyncIterator[StorageEntry], held: set[str]) -> AsyncIterator[StorageEntry]:
    """The storage stream without the paths moved files' bytes hold (`catalogue.moved_paths`), nor
    their URL variants: those are not dark, and their replicas are not in the catalogue side's LFN order."""
    async for entry in stream:
        if entry.lfn.partition(VARIANT_MARK)[0] not in held:
            yield entry


class Audit:
    """One run of one SE: open the storage side, merge it with the catalogue, act on what is lost."""

    def __init__(self, db: AsyncDatabase[Document], settings: AuditSettings,
                 credentials: Mapping[str, Mapping[str, str]], run: Document, se: StorageElement) -> None:
        self.db, self.settings, self.credentials, self.run, self.se = db, settings, credentials, run, se
        self.pending: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.found = Findings()
        self.published = time.monotonic()
        if any(path.rstrip("/") for path in se.vo_paths.values()):
            # Its files lie below each VO's path, out of LFN order: a listing would read them as dark.
            raise InvalidInput(f"SE {se.name} places VOs' files below their paths ({', '.join(sorted(se.vo_paths))}); "
                               "auditing such an SE is not supported yet")
        endpoint = endpoints(se, "/", "read", credentials=credentials)[0]
        self.root, self.base = endpoint.url, endpoint.protocol.base_url()
        self.plugin = plugin_for(endpoint.url, endpoint.options)
        self.variants = Variants(db, se)

    async def storage_side(self) -> tuple[AsyncIterator[StorageEntry], float]:
        """The storage stream and the time it describes."""
        dump = self.run.get("dump")
        if not dump:
            if self.plugin.has_directories:
                await self.plugin.stat(self.root)  # an unmounted SE fails the run rather than lose it all
            return _listing(self.plugin, self.root, self.base), time.time()
        endpoint = endpoints(self.se, dump, "read", credentials=self.credentials)[0]
        info = await self.plugin.stat(endpoint.url)
        return sorted_dump(dump_lines(self.plugin.read(endpoint.url)), info.mtime), info.mtime or time.time()

    async def publishing(self, stream: AsyncIterator[StorageEntry]) -> AsyncIterator[StorageEntry]:
        """The storage stream, publishing the run's counters every PROGRESS_S while it flows."""
        async for entry in stream:
            if time.monotonic() - self.published > PROGRESS_S:
                self.published = time.monotonic()
                await audit_runs.progress(self.db, self.run, {**self.found.counts, **self.counts})
            yield entry

    async def on_entry(self, entry: dict[str, Any]) -> None:
        self.pending.append(entry)
        if len(self.pending) >= ENTRY_BATCH:
            await self.flush()

    async def _lost(self, entries: list[dict[str, Any]]) -> None:
        """Mark a batch of lost replicas (after a stat each, when the storage was listed live); one
        registered at a URL variant whose path storage holds is matched, not lost (`audit_variants`)."""
        tags = await registered_tags(self.db, self.se, [e["lfn"] for e in entries]) if entries else {}
        for entry in entries:
            tag = tags.get(entry["lfn"], "")
            if tag and self.variants.seen_at(entry["lfn"], tag):
                entry["kind"] = "variant"
                self._recount(lost=-1, matched=1, storage=1)
                continue
            if not self.run.get("dump") and await self.plugin.exists(self._url(entry["lfn"], tag)):
                entry["kind"] = "rechecked"  # written back meanwhile, or listed late: not lost
                self._count("rechecked")
        lost = [e for e in entries if e["kind"] == "lost"]
        lease.check_held()  # a stat older than the lease: its successor has the run (and stats afresh)
        left = await mark_lost_many(self.db, self.se.name, [e["lfn"] for e in lost])
        for entry in lost:
            entry["marked"] = entry["lfn"] in left
            entry["no_copy"] = (left[entry["lfn"]] if entry["marked"]
                                else await other_copies(self.db, entry["lfn"], self.se.name)) == 0

    def _url(self, lfn: str, tag: str = "") -> str:
        url = endpoints(self.se, lfn, "read", credentials=self.credentials)[0].url
        return variant_url(url, tag) if tag else url

    def _recount(self, **by: int) -> None:
        for name, n in by.items():
            self.found.counts[name] += n

    async def _settle_variants(self) -> None:
        """The variant paths no replica stands for are dark (or young), as any unregistered file."""
        now = time.time()
        for entry in await self.variants.settle():
            self._recount(storage=1)
            if entry.mtime is not None and now - entry.mtime < self.settings.dark_grace_s:
                self._recount(young=1)
            else:
                self._recount(dark=1)
                await self.on_entry({"kind": "dark", "lfn": entry.lfn, "storage_size": entry.size})

    async def storage_adler32(self, lfn: str) -> str | None:
        """The SE's own adler32 of lfn (None when it cannot say)."""
        try:
            return await self.plugin.checksum(self._url(lfn))
        except CairnError:
            return None

    async def _still_mismatched(self, entry: dict[str, Any]) -> bool | None:
        """Whether storage confirms a mismatch now (None: it cannot tell)."""
        try:
            info = await self.plugin.stat(self._url(entry["lfn"]))
            if info.size != entry["size"]:
                entry["storage_size"] = info.size
                return True
            if entry["kind"] == "size_mismatch":
                return False
            stored = await self.plugin.checksum(self._url(entry["lfn"]))
        except CairnError:
            return None
        entry["storage_adler32"] = stored
        return stored != entry["adler32"]

    async def _mismatched(self, entries: list[dict[str, Any]]) -> None:
        """Mark the replicas whose mismatch storage confirms `bad`; the others stay as they are."""
        for entry in entries:
            confirmed = await self._still_mismatched(entry)
            if confirmed is False:  # rewritten meanwhile, or the dump was stale
                self.found.counts[entry["kind"]] -= 1
                entry["kind"] = "rechecked"
                self._count("mismatch_rechecked")
                continue
            lease.check_held()
            entry["marked"] = bool(confirmed) and await mark_bad(self.db, entry["lfn"], self.se.name, entry["status"])
            self._count("bad", int(entry["marked"]))

    def _count(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by

    async def flush(self) -> None:
        await self._lost([e for e in self.pending if e["kind"] == "lost"])
        await self._mismatched([e for e in self.pending if e["kind"] in MISMATCHES])
        kept = [e for e in self.pending if e["kind"] not in ("rechecked", "variant")]
        self._count("no_copy", sum(1 for e in kept if e.get("no_copy")))
        await audit_runs.add_entries(self.db, self.run, kept)
        self.pending = []

    async def execute(self) -> dict[str, int]:
        storage, as_of = await self.storage_side()
        storage = self.variants.aside(_without(storage, await held_on(self.db, self.se.name)), self._settle_variants)
        catalogue = replicas_on(self.db, self.se.name, page=self.settings.page)
        checksums = self.settings.checksums and self.plugin.server_checksum and not self.run.get("dump")
        found = await compare(self.publishing(storage), catalogue, as_of=as_of,
                              grace_s=self.settings.dark_grace_s, on_entry=self.on_entry, found=self.found,
                              checksum_of=self.storage_adler32 if checksums else None)
        await self._settle_variants()
        await self.flush()
        counts = {**found.counts, **self.counts}
        counts["lost"] -= counts.get("rechecked", 0)
        return counts

    async def close(self) -> None:
        await self.plugin.close()


async def run_audit(db: AsyncDatabase[Document], settings: Settings, run_id: str) -> Document | None:
    """Do one open run now (the caller holds the SE's lease); the run as it ended. An auditor
    that stalled past its lease meanwhile changes nothing of the run (`audit_runs`: its attempt)."""
    lease.check_held()
    run = await audit_runs.start(db, run_id)
    if run is None:
        return None
    try:
        se = await get_storage_element(db, run["se"])
        audit = Audit(db, settings.audit, settings.storage_credentials, run, se)
    except CairnError as exc:
        await audit_runs.finish(db, run, {}, error=exc.message)
        return await audit_runs.get_run(db, run_id)
    try:
        counts = await audit.execute()
    except (CairnError, OSError) as exc:
        message = exc.message if isinstance(exc, CairnError) else str(exc)
        log.warning("audit %s of %s failed: %s", run_id, run["se"], message)
        ended = await audit_runs.finish(db, run, audit.counts, error=message)
    else:
        log.info("audit %s of %s: %s", run_id, run["se"], counts)
        ended = await audit_runs.finish(db, run, counts)
    finally:
        await audit.close()
    if not ended:
        log.warning("audit %s of %s was taken over while this auditor stalled; its findings are dropped",
                    run_id, run["se"])
    return await audit_runs.get_run(db, run_id)


async def request_dark_deletion(db: AsyncDatabase[Document], run_id: str, *, requester: str) -> dict[str, Any]:
    """Queue the deletion of every dark file a finished run found (the reaper deletes each after
    checking it is still dark: recorded by this run and still without a replica on the SE)."""
    run = await audit_runs.get_run(db, run_id)
    if run["state"] != "done":
        raise Conflict(f"audit run {run_id!r} is {run['state']}; dark files are deleted from finished runs only")
    await audit_runs.allow_cleaning(db, run_id)
    items = [{"lfn": lfn, "dest_se": run["se"], "audit_run": run_id} for lfn in await audit_runs.dark_lfns(db, run_id)]
    return await queueing.submit(db, "delete", items, requester=requester, activity=DARK_ACTIVITY, submission=run_id)


class Auditor(Daemon):
    name = "auditor"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db, self.all_settings, self.settings = db, settings, settings.audit
        self.idle_sleep_s = settings.audit.idle_sleep_s

    async def _schedule(self) -> None:
        if not self.settings.interval_s:
            return
        due = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.interval_s)
        for se in await list_storage_elements(self.db):
            last = await audit_runs.last_created(self.db, se.name)
            if last is None or last < due:
                try:
                    await audit_runs.queue_run(self.db, se.name, requester=self.worker)
                except CairnError:
                    continue  # one is open already

    async def run_once(self) -> int:
        await self._schedule()
        done = 0
        for run in await audit_runs.open_runs(self.db):
            if self.stopping:
                break
            held, _ = await lease.under_named_lease(
                self.db, f"auditor:{run['se']}", self.worker, run_audit(self.db, self.all_settings, run["_id"]),
                lease_s=self.settings.lease_s)
            done += int(held)
        return done
