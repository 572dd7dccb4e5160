"""The usage counters stay exact, and writable, whatever happens between a call's writes: a file's
replicas changing while a removal holds it (`catalogue.file_removal`), sizes past what a counter holds."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.file_removal import COUNTED_FIELDS, claim_removals, delete_claimed
from catalogue.files import register_files, remove_files
from catalogue.namespace import mkdir
from catalogue.replica_removal import REMOVAL, retire_replicas
from catalogue.replicas import add_replicas, remove_replicas
from catalogue.usage import count_removals, directory_usage, rebuild, record_files, removal_fences
from kernel.db import Document
from tests.fixtures.catalogue import ADMIN, ALICE


async def _registered(db: AsyncDatabase[Document], lfn: str) -> None:
    result = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1000, "adler32": "00000001",
                                               "replicas": [{"se": "CERN-DISK"}]}])
    assert not result["failed"], result["failed"]


async def _exact(db: AsyncDatabase[Document]) -> None:
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def _removal_with(db: AsyncDatabase[Document], lfn: str, meanwhile: object) -> set[str]:
    """A forced removal of lfn with `meanwhile` awaited between its read of the record and its delete."""
    claim = await claim_removals(db, [lfn], COUNTED_FIELDS, force=True)
    await meanwhile  # type: ignore[misc]
    removed = await delete_claimed(db, claim)
    await record_files(db, removed.values(), -1)
    return set(removed)


async def test_a_replica_added_while_a_forced_removal_holds_the_file_is_taken_off_its_se(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await _registered(db, "/vo/held/a")
    added = add_replicas(db, [{"lfn": "/vo/held/a", "se": "DESY-DISK"}])
    assert await _removal_with(db, "/vo/held/a", added) == {"/vo/held/a"}
    assert await db["files"].count_documents({}) == 0
    await _exact(db)


async def test_a_replica_removed_while_a_forced_removal_holds_the_file_is_taken_off_once(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await _registered(db, "/vo/held/b")
    pulled = remove_replicas(db, [{"lfn": "/vo/held/b", "se": "CERN-DISK"}])
    assert await _removal_with(db, "/vo/held/b", pulled) == {"/vo/held/b"}
    assert await db["files"].count_documents({}) == 0
    await _exact(db)


async def test_a_replica_added_while_a_removal_without_force_holds_the_file_keeps_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    result = await register_files(db, ADMIN, [{"lfn": "/vo/held/c", "size": 10, "adler32": "00000001"}])
    assert not result["failed"]
    claim = await claim_removals(db, ["/vo/held/c"], COUNTED_FIELDS, force=False)
    assert set(claim.records) == {"/vo/held/c"}  # no replica yet: marked for removal
    await add_replicas(db, [{"lfn": "/vo/held/c", "se": "DESY-DISK"}])  # e.g. an upload finishing
    removed = await delete_claimed(db, claim)
    await record_files(db, removed.values(), -1)
    assert removed == {} and claim.kept == {"/vo/held/c": 1}
    doc = await db["files"].find_one({"_id": "/vo/held/c"})
    assert doc is not None and [r["se"] for r in doc["replicas"]] == ["DESY-DISK"] and "removing" not in doc
    await _exact(db)


async def test_a_forced_removal_after_a_reaper_died_between_its_count_and_its_pull_takes_the_replica_off_once(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await _registered(db, "/vo/reaped/f")
    doc = await db["files"].find_one({"_id": "/vo/reaped/f"})
    assert doc is not None
    assert await retire_replicas(db, {"/vo/reaped/f": (doc["version"], [(0, "CERN-DISK")])}) == {"/vo/reaped/f"}
    # The reaper's removal counted the replica off its SE by its token, then died before its pull.
    fences = await removal_fences(db, ["CERN-DISK"])
    doc = await db["files"].find_one({"_id": "/vo/reaped/f"})
    assert doc is not None
    assert await count_removals(db, {"CERN-DISK": {doc["replicas"][0][REMOVAL]: 1000}}, fences)
    outcome = await remove_files(db, ADMIN, ["/vo/reaped/f"], force=True)
    assert outcome["successful"] == {"/vo/reaped/f": {"removed": True}}, outcome
    await _exact(db)


async def test_claimed_sizes_past_the_int64_range_saturate_the_counters_and_stop_no_registration(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await mkdir(db, ADMIN, "/cta/open", mode=0o777, parents=True)
    # An ordinary user claims sizes no storage holds: their sum passes what a counter can hold.
    for name in ("a", "b", "c"):
        outcome = await register_files(db, ALICE, [{"lfn": f"/cta/open/{name}", "size": 2**62, "adler32": "00000001",
                                                    "replicas": [{"se": "CERN-DISK"}]}])
        assert not outcome["failed"], outcome
    # Everybody else's registrations are still written, counted and told to the change feed.
    await _registered(db, "/vo/after/f")
    assert (await directory_usage(db, "/vo"))["bytes"] == 1000
    registered = {e["did"] for e in await change_feed.read(db, 0, 1000) if e["kind"] == "file_registered"}
    assert {"/cta/open/c", "/vo/after/f"} <= registered, registered
    assert (await directory_usage(db, "/"))["bytes"] == 2**63 - 1  # saturated, not wrapped
    report = await rebuild(db, fix=True)  # a recount past the range is stored saturated too
    assert report["moved"] == [], report
    await _exact(db)
