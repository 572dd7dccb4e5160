"""Replica URLs are the server's, never the client's: a URL outside its SE (or of another LFN on
the same SE) is refused at registration, and a stored one (written before this rule) is refused
by the reaper, the transfer worker and the signed-URL route before they touch any storage.

Each test asserts the answer and that nothing changed: a sentinel file outside every SE keeps its
bytes, another user's object keeps its bytes, the catalogue keeps its records.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue.storage_elements import StorageElement, replica_url
from kernel.db import Document
from kernel.errors import Forbidden, InvalidInput, NotFound
from kernel.settings import Settings
from storage_plugins.posix import PosixPlugin, file_url
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.s3 import S3Endpoint
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, run_until_drained, se_root, write_bytes
from transfers import queueing
from transfers import requests as rq
from transfers.reaper import Reaper
from transfers.worker import TransferWorker
from wms.config import WmsSettings

ALICE_SCOPES = ("catalogue.read", "catalogue.write", "transfers.read", "transfers.write")
SECRET = b"the server's private key, readable by its owner only"


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


@dataclass
class Bed:
    db: AsyncDatabase[Document]
    alice: Client
    disk1: StorageElement
    disk2: StorageElement
    sentinel: Path

    def untouched(self) -> bool:
        """The file outside every SE is still there with its bytes."""
        return self.sentinel.read_bytes() == SECRET

    async def legacy_file(self, lfn: str, data: bytes, replicas: list[Document], owner: str = "alice") -> None:
        """A file record as a registration could write it before replica URLs were checked."""
        await self.db["files"].insert_one({
            "_id": lfn, "size": len(data), "adler32": adler32(data), "owner": owner, "group": "cta", "mode": 0o644,
            "parent": lfn.rsplit("/", 1)[0], "replicas": [{"status": "available", **r} for r in replicas],
            "meta": {}, "meta_effective": {}, "version": 1})

    async def replicas(self, lfn: str) -> list[Document]:
        doc = await self.db["files"].find_one({"_id": lfn}, {"replicas": 1})
        return [] if doc is None else [{k: r[k] for k in ("se", "url", "status")} for r in doc["replicas"]]


@pytest.fixture
async def bed(api: RunningApi, admin: Client, database: AsyncDatabase[Document], tmp_path: Path
              ) -> AsyncIterator[Bed]:
    """Two disk SEs, /cta/mc writable by alice, and a server-only file outside every SE."""
    disk1, disk2 = disk_se("LOCAL-DISK1", tmp_path / "se1"), disk_se("LOCAL-DISK2", tmp_path / "se2")
    await add_ses(database, disk1, disk2)
    await admin.mkdir("/cta/mc", parents=True)
    await admin.chown("/cta/mc", owner="alice", group="cta")
    sentinel = tmp_path / "outside" / "server-only.key"
    sentinel.parent.mkdir()
    sentinel.write_bytes(SECRET)
    sentinel.chmod(0o600)
    async with api.client(api.token("alice", scopes=ALICE_SCOPES)) as alice:
        yield Bed(database, alice, disk1, disk2, sentinel)


async def test_registering_a_url_outside_every_se_is_refused_and_writes_nothing(bed: Bed) -> None:
    with pytest.raises(InvalidInput, match="refused"):
        await bed.alice.register_files([{
            "lfn": "/cta/mc/new/evil1.root", "size": len(SECRET), "adler32": adler32(SECRET),
            "replicas": [{"se": "LOCAL-DISK1", "url": file_url(bed.sentinel)}, {"se": "LOCAL-DISK2"}]}])
    assert await bed.db["files"].find_one({"_id": "/cta/mc/new/evil1.root"}) is None
    with pytest.raises(NotFound):  # not even its directory was made
        await bed.alice.stat("/cta/mc/new")
    assert bed.untouched()


async def test_adding_a_replica_whose_url_is_another_files_on_the_same_se_is_refused(bed: Bed) -> None:
    await bed.alice.register_files([{"lfn": "/cta/mc/mine.root", "size": 1, "adler32": "00000001",
                                     "replicas": [{"se": "LOCAL-DISK2"}]}])
    before = await bed.replicas("/cta/mc/mine.root")
    others = replica_url(bed.disk1.protocols[0], "/lhcb/pub/f.root")
    for url in (others, file_url(bed.sentinel), others.replace("/lhcb/", "/cta/mc/%2e%2e/%2e%2e/lhcb/")):
        with pytest.raises(InvalidInput, match="refused"):
            await bed.alice.add_replicas([{"lfn": "/cta/mc/mine.root", "se": "LOCAL-DISK1", "url": url}])
    assert await bed.replicas("/cta/mc/mine.root") == before


async def test_a_deletion_request_never_deletes_a_stored_url_outside_its_se(bed: Bed, settings: Settings) -> None:
    outside = {"se": "LOCAL-DISK1", "url": file_url(bed.sentinel)}
    inside = {"se": "LOCAL-DISK2", "url": replica_url(bed.disk2.protocols[0], "/cta/mc/evil1.root")}
    await bed.legacy_file("/cta/mc/evil1.root", SECRET, [outside, inside])
    write_bytes(bed.disk2, "/cta/mc/evil1.root", SECRET)
    before = await bed.replicas("/cta/mc/evil1.root")
    await bed.alice.delete_replicas(["/cta/mc/evil1.root"], "LOCAL-DISK1")
    await Reaper(fast_settings(settings), bed.db).run(max_cycles=1)
    [request] = await bed.db[rq.REQUESTS].find({"lfn": "/cta/mc/evil1.root"}).to_list()
    assert request["state"] == "failed" and "refused" in request["last_error"]
    assert bed.untouched()
    assert await bed.replicas("/cta/mc/evil1.root") == before


async def test_a_transfer_from_a_server_only_file_copies_nothing_and_leaks_no_checksum(
    bed: Bed, settings: Settings,
) -> None:
    # Registered with a wrong checksum, as an attacker fishing for the real one would.
    await bed.legacy_file("/cta/mc/steal.root", b"x", [{"se": "LOCAL-DISK1", "url": file_url(bed.sentinel)}])
    await bed.alice.replicate(["/cta/mc/steal.root"], "LOCAL-DISK2")
    await run_until_drained(bed.db, TransferWorker(fast_settings(settings), bed.db))
    [request] = await bed.db[rq.REQUESTS].find({"lfn": "/cta/mc/steal.root"}).to_list()
    assert request["state"] == "failed" and "refused" in request["last_error"]
    assert adler32(SECRET) not in str(request)
    assert not (se_root(bed.disk2) / "cta/mc/steal.root").exists()
    assert [r["se"] for r in await bed.replicas("/cta/mc/steal.root")] == ["LOCAL-DISK1"]
    assert bed.untouched()


async def test_a_percent_encoded_dot_dot_lfn_is_refused_and_never_reaches_another_users_bytes(
    bed: Bed, settings: Settings,
) -> None:
    theirs = write_bytes(bed.disk1, "/lhcb/pub/f.root", b"bob's data")
    evil = "/cta/mc/%2e%2e/%2e%2e/lhcb/pub/f.root"
    with pytest.raises(InvalidInput, match="invalid LFN"):
        await bed.alice.register_files([{"lfn": evil, "size": 1, "adler32": "00000001",
                                         "replicas": [{"se": "LOCAL-DISK1"}, {"se": "LOCAL-DISK2"}]}])
    assert list((await bed.alice.delete_replicas([evil], "LOCAL-DISK1"))["failed"]) == [evil]
    assert await bed.db["files"].find_one({"_id": evil}) is None
    # A record and a request from before the LFN rule: the reaper still refuses to act.
    await bed.legacy_file(evil, b"x", [{"se": se.name, "url": replica_url(se.protocols[0], evil)}
                                       for se in (bed.disk1, bed.disk2)])
    before = await bed.replicas(evil)
    await queueing.submit(bed.db, "delete", [{"lfn": evil, "dest_se": "LOCAL-DISK1"}], requester="user:alice")
    await Reaper(fast_settings(settings), bed.db).run(max_cycles=1)
    [request] = await bed.db[rq.REQUESTS].find({"lfn": evil}).to_list()
    assert request["state"] == "failed" and "refused" in request["last_error"]
    assert theirs.read_bytes() == b"bob's data"
    assert await bed.replicas(evil) == before


async def test_an_lfn_or_directory_ending_in_a_newline_is_refused(bed: Bed) -> None:
    with pytest.raises(InvalidInput, match="invalid LFN"):
        await bed.alice.register_files([{"lfn": "/cta/mc/nl.root\n", "size": 1, "adler32": "00000001"}])
    with pytest.raises(InvalidInput, match="invalid LFN"):
        await bed.alice.mkdir("/cta/mc/m\n")
    for path in ("/cta/mc/nl.root", "/cta/mc/nl.root\n", "/cta/mc/m", "/cta/mc/m\n"):
        with pytest.raises((NotFound, InvalidInput)):
            await bed.alice.stat(path)
    assert [e["name"] async for e in bed.alice.ls("/cta/mc")] == []


async def test_the_posix_plugin_never_leaves_its_se_root(tmp_path: Path) -> None:
    root = tmp_path / "se"
    (root / "cta").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(SECRET)
    os.symlink(outside, root / "cta" / "link")
    plugin = PosixPlugin({"root": str(root)})
    escapes = [file_url(root / "cta" / "link" / "f"), f"file://{root}/cta/%2e%2e/%2e%2e/outside/f",
               f"file://{root}/cta/../../outside/f", file_url(outside / "f")]
    for url in escapes:
        with pytest.raises(Forbidden):
            await plugin.stat(url)
        with pytest.raises(Forbidden):
            await plugin.checksum(url)
        with pytest.raises(Forbidden):
            await plugin.delete(url)
        with pytest.raises(Forbidden):
            await plugin.write(url, _chunks(b"overwritten"))
    local = tmp_path / "local"
    local.write_bytes(b"overwritten")
    inside = file_url(root / "cta" / "in")  # a file that may go first, then the escapes in one call
    results = await plugin.put_many([(local, url, None) for url in [inside, *escapes, inside]])
    assert [type(r).__name__ for r in results] == ["WriteResult", *["Forbidden"] * len(escapes), "WriteResult"]
    assert (outside / "f").read_bytes() == SECRET
    with pytest.raises(Forbidden):  # '..' is refused even by a plugin that was given no root
        await PosixPlugin().stat(f"file://{root}/cta/%2E%2E/%2E%2E/outside/f")


async def test_posix_put_many_makes_the_directories_it_needs_the_root_too(tmp_path: Path) -> None:
    root = tmp_path / "se-not-made-yet"
    plugin = PosixPlugin({"root": str(root)})
    local = tmp_path / "local"
    local.write_bytes(b"payload")
    urls = [file_url(root / "top"), file_url(root / "a" / "b" / "f1"), file_url(root / "a" / "b" / "f2"),
            file_url(root / "a" / "c" / "f3")]
    results = await plugin.put_many([(local, url, None) for url in urls])
    assert [type(r).__name__ for r in results] == ["WriteResult"] * len(urls), results
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == ["a/b/f1", "a/b/f2", "a/c/f3",
                                                                                         "top"]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_signed_url_for_another_users_s3_object_is_refused_for_get_and_put(
    api: RunningApi, live_ses: LiveSEs, admin: Client, s3_server: S3Endpoint, database: AsyncDatabase[Document],
    tmp_path: Path,
) -> None:
    se = await live_ses.add("s3", "S3-SE", secrets_on_server=True)
    await admin.mkdir("/lhcb/secret", parents=True)
    await admin.chown("/lhcb", owner="bob", group="lhcb")
    await admin.chown("/lhcb/secret", owner="bob", group="lhcb")
    await admin.chmod("/lhcb/secret", 0o700)
    source = tmp_path / "x.root"
    source.write_bytes(b"bob's secret bytes")
    async with api.client(api.token("bob", vo="lhcb", groups=("lhcb",))) as bob:
        [up] = await bob.upload([source], "/lhcb/secret/x.root", se.name, credentials={})
        assert up.status == "uploaded" and up.url is not None, up.error
    bucket, key = up.url.removeprefix("s3://").split("/", 1)

    async def bobs_object() -> bytes:
        async with s3_server.client() as client:
            answer = await client.get_object(Bucket=bucket, Key=key)
            return bytes(await answer["Body"].read())

    async with api.client(api.token("alice", scopes=ALICE_SCOPES)) as alice:
        await alice.mkdir("/cta/mc", parents=True)
        with pytest.raises(InvalidInput, match="refused"):
            await alice.register_files([{"lfn": "/cta/mc/x.root", "size": 3, "adler32": "00000001",
                                         "replicas": [{"se": se.name, "url": up.url, "status": "copying"}]}])
        files = database["files"]
        assert await files.find_one({"_id": "/cta/mc/x.root"}) is None
        # The same replica as stored before URLs were checked: no URL is signed for it.
        await files.insert_one({"_id": "/cta/mc/x.root", "size": 3, "adler32": "00000001", "owner": "alice",
                                "group": "cta", "mode": 0o644, "parent": "/cta/mc", "meta": {},
                                "meta_effective": {}, "version": 1,
                                "replicas": [{"se": se.name, "url": up.url, "status": "copying"}]})
        with pytest.raises(InvalidInput, match="refused"):
            await alice.signed_url("/cta/mc/x.root", se.name, "PUT")
        await files.update_one({"_id": "/cta/mc/x.root"}, {"$set": {"replicas.0.status": "available"}})
        with pytest.raises(InvalidInput, match="refused"):
            await alice.signed_url("/cta/mc/x.root", se.name, "GET")
    assert await bobs_object() == b"bob's secret bytes"
    async with api.client(api.token("bob", vo="lhcb", groups=("lhcb",))) as bob:
        [down] = await bob.download(["/lhcb/secret/x.root"], tmp_path / "back", credentials={})
        assert down.status == "downloaded", down.error
    assert (tmp_path / "back").read_bytes() == b"bob's secret bytes"


async def test_a_pilot_is_never_sent_to_a_stored_url_outside_its_se_nor_may_it_report_one(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, tmp_path: Path,
) -> None:
    sentinel = tmp_path / "server-only.key"
    sentinel.write_bytes(SECRET)
    await grid.add_file("/cta/in/f", b"in", ["SITE-A-DISK", "SITE-B-DISK"])
    await grid.db["files"].update_one({"_id": "/cta/in/f"}, {"$set": {"replicas.0.url": file_url(sentinel)}})
    out = {"path": "o", "lfn": "/cta/out/o", "se": "SITE-A-DISK"}
    async with api.client(api.token(scopes=("jobs.read", "jobs.write"))) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/true", "input_data": ["/cta/in/f"],
                                             "outputs": [out]}])
    await check_all(grid.db, wms_config)
    async with api.client(api.token(sub="pilot", scopes=("jobs.pilot",))) as pilot:
        order = await pilot.match_job(pilot="p", site="SITE-A")
        assert order is not None and order["id"] == job_id
        assert [{k: r[k] for k in ("se", "site", "url")} for r in order["inputs"][0]["replicas"]] == [
            {"se": "SITE-B-DISK", "site": "SITE-B", "url": grid.url("SITE-B-DISK", "/cta/in/f")}]
        await pilot.start_job(job_id, pilot="p", attempt=1)
        result = await pilot.register_job_outputs(job_id, pilot="p", attempt=1, files=[
            {"lfn": "/cta/out/o", "url": file_url(sentinel), "size": len(SECRET), "adler32": adler32(SECRET)}])
    assert list(result["failed"]) == ["/cta/out/o"]  # refused: not this attempt's URL on its SE
    assert await grid.db["files"].find_one({"_id": "/cta/out/o"}) is None
    assert sentinel.read_bytes() == SECRET
