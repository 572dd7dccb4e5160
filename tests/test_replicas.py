"""Replicas: add, remove, resolve in bulk, guarded status changes, the active view, URL rule."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files, get_file, register_files
from catalogue.replicas import (
    active_replicas,
    add_replicas,
    get_replicas,
    remove_replicas,
    set_replica_status,
    set_replica_statuses,
)
from catalogue.storage_elements import StorageElementUpdate, get_storage_element, update_storage_element
from kernel.db import Document
from kernel.errors import InvalidInput
from tests.fixtures.catalogue import ADMIN


@pytest.fixture
async def two_files(catalogue_db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    files = [{"lfn": f"/cta/r/f{i}", "size": 1, "adler32": "00000001", "replicas": [{"se": "CERN-DISK"}]}
             for i in range(2)]
    await register_files(catalogue_db, ADMIN, files)
    return catalogue_db


async def test_url_is_the_preferred_protocol_followed_by_the_lfn(two_files: AsyncDatabase[Document]) -> None:
    result = await add_replicas(two_files, [{"lfn": "/cta/r/f0", "se": "DESY-DISK"},
                                            {"lfn": "/cta/r/f1", "se": "DESY-DISK",
                                             "url": "S3://S3.DESY.DE//bucket//cta/r/%66%31"}])
    assert result == {"successful": {"/cta/r/f0": ["DESY-DISK"], "/cta/r/f1": ["DESY-DISK"]}, "failed": {}}
    found, _ = await get_replicas(two_files, ["/cta/r/f0", "/cta/r/f1"])
    urls = {lfn: {r["se"]: r["url"] for r in doc["replicas"]} for lfn, doc in found.items()}
    assert urls["/cta/r/f0"]["DESY-DISK"] == "s3://s3.desy.de/bucket/cta/r/f0"
    # A given URL that normalises to one of the SE's own URLs for the LFN is stored in its canonical form.
    assert urls["/cta/r/f1"]["DESY-DISK"] == "s3://s3.desy.de/bucket/cta/r/f1"


@pytest.mark.parametrize("url", [
    "s3://elsewhere/x",                                  # another bucket
    "s3://s3.desy.de/bucket/lhcb/secret/x.root",         # under the SE's prefix, but another LFN's object
    "s3://s3.desy.de/bucket/cta/r/x/../f0",              # dot segments
    "s3://s3.desy.de/bucket/cta/r/%2e%2e/r/f0",          # encoded dot segments
    "s3://s3.desy.de/bucket/cta/r/f0?versionId=1",       # a query
    "file:///some/file/outside/every/SE",
])
async def test_a_given_url_other_than_the_ses_own_is_refused_and_nothing_is_written(
    two_files: AsyncDatabase[Document], url: str,
) -> None:
    with pytest.raises(InvalidInput, match="refused"):
        await add_replicas(two_files, [{"lfn": "/cta/r/f0", "se": "DESY-DISK"},
                                       {"lfn": "/cta/r/f1", "se": "DESY-DISK", "url": url}])
    found, _ = await get_replicas(two_files, ["/cta/r/f0", "/cta/r/f1"])
    assert {lfn: [r["se"] for r in doc["replicas"]] for lfn, doc in found.items()} == {
        "/cta/r/f0": ["CERN-DISK"], "/cta/r/f1": ["CERN-DISK"]}


async def test_adding_a_replica_twice_keeps_one(two_files: AsyncDatabase[Document]) -> None:
    await add_replicas(two_files, [{"lfn": "/cta/r/f0", "se": "CERN-DISK"}, {"lfn": "/cta/r/f0", "se": "CERN-DISK"}])
    assert [r["se"] for r in (await get_file(two_files, "/cta/r/f0"))["replicas"]] == ["CERN-DISK"]


async def test_missing_files_fail_per_lfn_and_unknown_ses_reject_the_call(two_files: AsyncDatabase[Document]) -> None:
    result = await add_replicas(two_files, [{"lfn": "/cta/r/none", "se": "CERN-TAPE"}])
    assert result["failed"] == {"/cta/r/none": "no such file"}
    with pytest.raises(InvalidInput, match="unknown storage element"):
        await add_replicas(two_files, [{"lfn": "/cta/r/f0", "se": "NOWHERE"}])
    assert len((await get_file(two_files, "/cta/r/f0"))["replicas"]) == 1


async def test_get_replicas_reports_unknown_lfns(two_files: AsyncDatabase[Document]) -> None:
    found, failed = await get_replicas(two_files, ["/cta/r/f0", "/cta/r/nope"])
    assert list(found) == ["/cta/r/f0"] and failed == {"/cta/r/nope": "no such file"}


async def test_status_change_is_guarded_by_the_expected_status(two_files: AsyncDatabase[Document]) -> None:
    assert await set_replica_status(two_files, "/cta/r/f0", "CERN-DISK", "copying", expected="available")
    assert not await set_replica_status(two_files, "/cta/r/f0", "CERN-DISK", "bad", expected="available")
    assert not await set_replica_status(two_files, "/cta/r/f0", "DESY-DISK", "bad")
    assert (await get_file(two_files, "/cta/r/f0"))["replicas"][0]["status"] == "copying"
    with pytest.raises(InvalidInput):
        await set_replica_status(two_files, "/cta/r/f0", "CERN-DISK", "vanished")


async def test_a_bulk_status_change_retries_what_changed_since_the_files_were_read(
    two_files: AsyncDatabase[Document],
) -> None:
    read = await fetch_files(two_files, ["/cta/r/f0", "/cta/r/f1"])
    # Meanwhile: f0 gains a replica in front of the one read (its position shifts), and f1's
    # replica goes bad (its guard no longer holds).
    await two_files["files"].update_one({"_id": "/cta/r/f0"}, {"$push": {"replicas": {
        "$each": [{"se": "DESY-DISK", "status": "available"}], "$position": 0}}})
    assert await set_replica_status(two_files, "/cta/r/f1", "CERN-DISK", "bad")
    items = [{"lfn": lfn, "se": "CERN-DISK", "status": "copying", "expected": "available"} for lfn in read]
    result = await set_replica_statuses(two_files, items, read)
    assert result["successful"] == {"/cta/r/f0": "copying"} and list(result["failed"]) == ["/cta/r/f1"]
    f0 = {r["se"]: r["status"] for r in (await get_file(two_files, "/cta/r/f0"))["replicas"]}
    assert f0 == {"DESY-DISK": "available", "CERN-DISK": "copying"}
    assert (await get_file(two_files, "/cta/r/f1"))["replicas"][0]["status"] == "bad"


async def test_active_view_needs_available_replicas_on_read_enabled_ses(two_files: AsyncDatabase[Document]) -> None:
    await add_replicas(two_files, [{"lfn": "/cta/r/f0", "se": "DESY-DISK"}, {"lfn": "/cta/r/f1", "se": "DESY-DISK"}])
    await set_replica_status(two_files, "/cta/r/f1", "DESY-DISK", "bad")
    await update_storage_element(two_files, "CERN-DISK", StorageElementUpdate(read_enabled=False))
    assert not (await get_storage_element(two_files, "CERN-DISK")).read_enabled
    active, failed = await active_replicas(two_files, ["/cta/r/f0", "/cta/r/f1"])
    assert [r["se"] for r in active["/cta/r/f0"]["replicas"]] == ["DESY-DISK"]
    assert failed == {"/cta/r/f1": "no active replica"}


async def test_removing_replicas_is_idempotent(two_files: AsyncDatabase[Document]) -> None:
    items = [{"lfn": "/cta/r/f0", "se": "CERN-DISK"}]
    assert (await remove_replicas(two_files, items))["successful"] == {"/cta/r/f0": ["CERN-DISK"]}
    assert (await remove_replicas(two_files, items))["failed"] == {}
    assert (await get_file(two_files, "/cta/r/f0"))["replicas"] == []
