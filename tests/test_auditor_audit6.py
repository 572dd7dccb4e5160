"""Audit 6 of the auditor: a replica written at a variant of its derived URL (every job output
is, `wms.outputs.attempt_url`) is matched with its bytes there. It was found lost at the plain
path (marked `lost`, "no copy") and its bytes reported dark, which cleaning then deleted: the
output's only bytes. A variant no replica stands for (a failed attempt's output) is still dark."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue.replica_urls import variant_url
from catalogue.storage_elements import StorageElement
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.audit import audit_settings, storage, write_on_storage
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.transfers import replica_status
from transfers.auditor import Auditor
from transfers.reaper import Reaper

LFN = "/cta/jobs/out.root"
KEPT, LEFT = "job-j1-attempt-2", "job-j1-attempt-1"  # the registered attempt's output, and a failed one's
DATA = b"a job's output" * 100


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _outputs(se: StorageElement, admin: Client, settings: Settings) -> dict[str, str]:
    """Both attempts' outputs on se's storage, the second registered as LFN's replica: their URLs."""
    await write_on_storage(se, "/cta/jobs/other.root", b"", settings)  # makes the directory
    plugin, url = storage(se, LFN, settings)
    urls = {tag: variant_url(url, tag) for tag in (KEPT, LEFT)}
    async with plugin:
        for at in urls.values():
            await plugin.write(at, _once(DATA), size=len(DATA))
    result = await admin.register_files([
        {"lfn": LFN, "size": len(DATA), "adler32": f"{zlib.adler32(DATA):08x}", "replicas": [{"se": se.name,
                                                                                              "url": urls[KEPT]}]},
        {"lfn": "/cta/jobs/other.root", "size": 0, "adler32": f"{zlib.adler32(b''):08x}",
         "replicas": [{"se": se.name}]}])
    assert not result["failed"], result
    return urls


async def _exists(se: StorageElement, url: str, settings: Settings) -> bool:
    plugin, _ = storage(se, LFN, settings)
    async with plugin:
        return await plugin.exists(url)


@pytest.mark.parametrize("dumped", [False, True])
async def test_a_replica_at_a_variant_url_is_matched_and_its_bytes_survive_cleaning(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client, dumped: bool,
) -> None:
    fast = audit_settings(live_ses.api.settings, dark_grace_s=0)
    se = await live_ses.add("file", name="OUTS")
    urls = await _outputs(se, admin, fast)
    dump = None
    if dumped:  # a site's dump lists the paths as they are on storage
        dump = "/dumps/today.txt"
        lines = [f"{LFN}!{KEPT} {len(DATA)}", f"{LFN}!{LEFT} {len(DATA)}", "/cta/jobs/other.root 0"]
        await write_on_storage(se, dump, "\n".join(lines).encode(), fast)
    run = await admin.queue_audit(se.name, dump=dump)
    await Auditor(fast, database).run(max_cycles=1)
    run = await admin.audit_run(str(run["id"]))
    assert run["state"] == "done", run
    entries = {(e["kind"], e["lfn"]) async for e in admin.audit_entries(str(run["id"]))}
    assert entries == {("dark", f"{LFN}!{LEFT}")}, entries
    counts = run["counts"]
    assert isinstance(counts, dict)
    assert (counts["lost"], counts["dark"], counts["matched"]) == (0, 1, 2), counts
    assert await replica_status(database, LFN, se.name) == "available"

    await admin.clean_dark(str(run["id"]))
    await Reaper(fast, database).run(max_cycles=1)
    assert await _exists(se, urls[KEPT], fast)
    assert not await _exists(se, urls[LEFT], fast)  # the failed attempt's output was dark: cleaned


async def test_a_dark_variant_registered_after_its_run_is_kept_by_the_cleaning(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client,
) -> None:
    fast = audit_settings(live_ses.api.settings, dark_grace_s=0)
    se = await live_ses.add("file", name="LATE")
    await _outputs(se, admin, fast)
    late = "/cta/jobs/late.root"
    plugin, url = storage(se, late, fast)
    at = variant_url(url, "job-j2-attempt-1")
    async with plugin:
        await plugin.write(at, _once(DATA), size=len(DATA))
    run = await admin.queue_audit(se.name)
    await Auditor(fast, database).run(max_cycles=1)
    assert f"{late}!job-j2-attempt-1" in {e["lfn"] async for e in admin.audit_entries(str(run["id"]), "dark")}
    # its job registers it after the run (a slow job's output): the cleaning must leave it
    result = await admin.register_files([{"lfn": late, "size": len(DATA), "adler32": f"{zlib.adler32(DATA):08x}",
                                          "replicas": [{"se": se.name, "url": at}]}])
    assert not result["failed"], result
    await admin.clean_dark(str(run["id"]))
    await Reaper(fast, database).run(max_cycles=1)
    async with plugin:
        assert await plugin.exists(at)
