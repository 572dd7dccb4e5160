"""Bulk registration: files with first replicas, idempotent, O(1) round trips per batch."""

from __future__ import annotations

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import get_file, register_files
from catalogue.namespace import stat
from kernel.db import READ_SLICE, Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN, CommandCounter


def a_file(lfn: str, *, size: int = 10, adler32: str = "0000abcd", ses: tuple[str, ...] = ("CERN-DISK",)) -> dict:
    return {"lfn": lfn, "size": size, "adler32": adler32, "replicas": [{"se": se} for se in ses]}


async def test_registered_file_has_the_contract_fields(catalogue_db: AsyncDatabase[Document]) -> None:
    result = await register_files(catalogue_db, ADMIN, [a_file("/cta/run1/f.root")])
    assert list(result["successful"]) == ["/cta/run1/f.root"] and result["failed"] == {}
    doc = await get_file(catalogue_db, "/cta/run1/f.root")
    assert doc["parent"] == "/cta/run1" and doc["name"] == "f.root"
    assert doc["size"] == 10 and doc["adler32"] == "0000abcd" and doc["md5"] is None
    assert doc["status"] == "active" and doc["owner"] == "root" and doc["group"] == "admin"
    assert doc["mode"] == 0o664 and doc["meta"] == {} and doc["guid"]
    assert doc["created"] == doc["modified"]
    [replica] = doc["replicas"]
    assert replica["se"] == "CERN-DISK" and replica["status"] == "available"
    assert replica["url"] == "davs://eos.cern.ch:443/eos/cta/cta/run1/f.root"


async def test_parents_are_created_like_mkdir_p(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/a/b/c/f1"), a_file("/cta/a/x/f2")])
    for path in ("/cta", "/cta/a", "/cta/a/b", "/cta/a/b/c", "/cta/a/x"):
        assert (await stat(catalogue_db, ADMIN, path))["type"] == "directory"


async def test_same_file_again_is_a_success_and_adds_new_replicas(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/f")])
    again = await register_files(catalogue_db, ADMIN, [a_file("/cta/f", ses=("CERN-DISK", "DESY-DISK"))])
    assert again["successful"]["/cta/f"]["created"] is False and again["failed"] == {}
    doc = await get_file(catalogue_db, "/cta/f")
    assert sorted(r["se"] for r in doc["replicas"]) == ["CERN-DISK", "DESY-DISK"]


async def test_different_checksum_or_size_for_an_existing_lfn_fails_with_reason(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/f"), a_file("/cta/g")])
    result = await register_files(catalogue_db, ADMIN, [a_file("/cta/f", adler32="ffffffff"), a_file("/cta/g", size=9)])
    assert "adler32" in result["failed"]["/cta/f"]
    assert "size" in result["failed"]["/cta/g"]
    assert (await get_file(catalogue_db, "/cta/f"))["adler32"] == "0000abcd"


async def test_guid_is_unique(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [{**a_file("/cta/f"), "guid": "G-1"}])
    result = await register_files(catalogue_db, ADMIN, [{**a_file("/cta/g"), "guid": "G-1"}])
    assert result["failed"] == {"/cta/g": "GUID already belongs to another file"}


async def test_a_file_cannot_take_the_place_of_a_directory_or_sit_below_a_file(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/d/f")])
    result = await register_files(catalogue_db, ADMIN, [a_file("/cta/d"), a_file("/cta/d/f/g")])
    assert result["failed"]["/cta/d"] == "a directory exists at this path"
    assert result["failed"]["/cta/d/f/g"] == "/cta/d/f is a file, not a directory"


async def test_a_batch_costs_the_same_few_commands_whatever_its_size(
    catalogue_db: AsyncDatabase[Document], mongodb_uri: str, settings: Settings,
) -> None:
    counter = CommandCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[counter], tz_aware=True)
    db = client[settings.database]
    try:
        sizes = {}
        for run, count in (("small", 10), ("large", 2000)):
            counter.clear()
            files = [a_file(f"/cta/{run}/d{i % 7}/f{i}", ses=("CERN-DISK", "DESY-DISK")) for i in range(count)]
            result = await register_files(db, ADMIN, files)
            assert len(result["successful"]) == count
            sizes[run] = list(counter.commands)
        # SEs, the VO registry (for VOs' paths on the SEs, and for where inherited metadata stops,
        # catalogue.metadata; both cached, so read by the first call only),
        # directories, missing parents, 2 inserts, the ancestors' move marks once written
        # (catalogue.directory_moves), the replicas' paths moved files hold (catalogue.moved_paths),
        # the call's pending claim and its notes on the usage records (catalogue.registration_counts),
        # the usage increments (a read of the counters, kept within the int64 range, and one bulk
        # write), the claim settled, and the change feed's events (one counter increment, one
        # insert); reads by _id go in slices of READ_SLICE ids, so a read costs one find per slice.
        slices = -(-2000 // READ_SLICE)
        assert len(sizes["small"]) <= 16, sizes
        assert [c for c in sizes["large"] if c != "find"] == [c for c in sizes["small"] if c != "find"], sizes
        assert sizes["large"].count("find") <= sizes["small"].count("find") * slices, sizes
        # The same batch again: duplicates are compared with one more query (per slice), their
        # calls' claims are read once (settled: `catalogue.registration_settling`) and tried once,
        # and their events written again (a retried call's may never have been): O(1) per slice.
        counter.clear()
        again = [a_file(f"/cta/large/d{i % 7}/f{i}", ses=("CERN-DISK", "DESY-DISK")) for i in range(2000)]
        assert len((await register_files(db, ADMIN, again))["successful"]) == 2000
        # (and the call's own pending claim and notes, taken back: 4 commands whatever the size).
        # Not counted: the SEs and the VO registry, read again when the first call took longer than
        # their 2 s caches (a loaded machine: 21 commands, 2 of them those).
        assert len(counter.besides("storage_elements", "vos")) <= 7 * slices + 5, counter.commands
    finally:
        await client.close()
