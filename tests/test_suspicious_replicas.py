"""Replicas found missing when read: a download or a transfer reports them suspicious, and the
threshold-th report marks them lost; a report of a replica that is there counts nothing."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.audit import write_on_storage
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    put_files,
    replica_status,
    run_until_drained,
    se_root,
)
from transfers import queueing
from transfers import requests as rq
from transfers.worker import TransferWorker


async def test_downloads_that_find_a_replica_missing_mark_it_lost_at_the_threshold(
    live_ses: LiveSEs, admin: Client, tmp_path: Path,
) -> None:
    live_ses.api.settings.audit.suspicious_threshold = 2
    se = await live_ses.add("file", name="GONE")
    await write_on_storage(se, "/cta/s/f", b"data", live_ses.api.settings)
    result = await admin.register_files([{"lfn": "/cta/s/f", "size": 4, "adler32": "03d8019b",
                                          "replicas": [{"se": "GONE"}]}])
    assert not result["failed"], result
    # someone claiming a replica that is there is not counted
    answer = await admin.request("POST", "/replicas/suspicious", json_body={"lfn": "/cta/s/f", "se": "GONE"})
    assert answer["state"] == "present"
    live_ses.stored_file("GONE", "/cta/s/f").unlink()
    first = await admin.download(["/cta/s/f"], tmp_path / "f", credentials={})
    assert first[0].status == "failed" and any("now suspicious" in n for n in first[0].notes), first[0].notes
    doc = await admin.get_file("/cta/s/f")
    assert [(r["status"], r["suspicions"]) for r in doc["replicas"]] == [("available", 1)]
    second = await admin.download(["/cta/s/f"], tmp_path / "f", credentials={})
    assert any("now lost" in n for n in second[0].notes), second[0].notes
    assert (await admin.get_file("/cta/s/f"))["replicas"][0]["status"] == "lost"


async def test_a_transfer_whose_source_is_missing_reports_it_and_fails_over(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    ses = [disk_se(name, tmp_path / name.lower()) for name in ("A", "B", "DEST")]
    await add_ses(database, *ses)
    await put_files(database, ses[:2], ["/vo/t/f"])
    for source in ses[:2]:
        (se_root(source) / "vo/t/f").unlink()  # gone from both sources behind the catalogue's back
    fast = fast_settings(settings)
    fast = fast.model_copy(update={"audit": fast.audit.model_copy(update={"suspicious_threshold": 1})})
    await queueing.submit_transfers(database, [{"lfn": "/vo/t/f", "dest_se": "DEST"}], requester="admin")
    await run_until_drained(database, TransferWorker(fast, database))
    request = await database[rq.REQUESTS].find_one({"lfn": "/vo/t/f"})
    assert request["state"] == "failed" and "no other source" in request["last_error"]
    assert [await replica_status(database, "/vo/t/f", name) for name in ("A", "B")] == ["lost", "lost"]


async def test_a_replica_being_written_is_not_counted_suspicious(live_ses: LiveSEs, admin: Client) -> None:
    """Its bytes are not there yet: a count taken then stayed, and the first miss after its copy
    ended marked it lost at once."""
    live_ses.api.settings.audit.suspicious_threshold = 2
    await live_ses.add("file", name="BEING")
    result = await admin.register_files([{"lfn": "/cta/s/w", "size": 4, "adler32": "03d8019b",
                                          "replicas": [{"se": "BEING", "status": "copying"}]}])
    assert not result["failed"], result
    answer = await admin.request("POST", "/replicas/suspicious", json_body={"lfn": "/cta/s/w", "se": "BEING"})
    assert answer["state"] == "not_expected", answer
    doc = await admin.get_file("/cta/s/w")
    assert [(r["status"], r.get("suspicions")) for r in doc["replicas"]] == [("copying", None)]


async def test_concurrent_reports_of_a_present_replica_all_find_it(live_ses: LiveSEs) -> None:
    """The server checks each report with its shared plugin of the SE; one report ending closed it
    under the others in flight (an S3 SE's client), which then answered 'unverified'."""
    se = await live_ses.add("s3", secrets_on_server=True)
    await write_on_storage(se, "/cta/s/p", b"present", live_ses.api.settings)
    adler32 = f"{zlib.adler32(b'present'):08x}"
    result = await live_ses.admin.register_files([{"lfn": "/cta/s/p", "size": 7, "adler32": adler32,
                                                   "replicas": [{"se": se.name}]}])
    assert not result["failed"], result
    api = live_ses.api
    token = api.token("bob", groups=("cta",), scopes=("catalogue.read",))

    async def report() -> object:
        async with api.client(token) as bob:
            answer = await bob.request("POST", "/replicas/suspicious", json_body={"lfn": "/cta/s/p", "se": se.name})
        return answer["state"]

    assert await asyncio.gather(*(report() for _ in range(20))) == ["present"] * 20
