"""A file record is deleted and taken off the usage counters by one call, however many remove it
at once (`catalogue.file_removal`): concurrent removals, a removal left half done, a move racing
a removal."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections import Counter

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.file_removal import REMOVAL_LEASE, claim_removals, delete_claimed, release
from catalogue.files import register_files, remove_files
from catalogue.moves import move
from catalogue.namespace import remove, stat
from catalogue.usage import REMOVING, directory_usage, rebuild, record_files, se_usage
from kernel.db import Document
from kernel.errors import Conflict, NotFound, ServiceUnavailable
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.cli import run_cli

FIELDS = {"size": 1, "replicas.se": 1}


async def registered(db: AsyncDatabase[Document], lfns: list[str], *, replicas: bool = True) -> None:
    files = [{"lfn": lfn, "size": 100 + i, "adler32": "00000001",
              **({"replicas": [{"se": "CERN-DISK"}, {"se": "DESY-DISK"}]} if replicas else {})}
             for i, lfn in enumerate(lfns)]
    result = await register_files(db, ADMIN, files)
    assert not result["failed"], result["failed"]


async def assert_exact(db: AsyncDatabase[Document]) -> None:
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def test_concurrent_removals_of_the_same_files_take_each_off_once(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    lfns = [f"/vo/race/d{d}/f{i:03d}" for d in range(3) for i in range(100)]
    await registered(db, lfns)
    # Six calls at once, each over all the files (as six clients retrying one request would),
    # and single-file removals of a few of them through the namespace meanwhile.
    calls = [remove_files(db, ADMIN, lfns[k:] + lfns[:k], force=True) for k in (0, 50, 100, 150, 200, 250)]
    outcomes = await asyncio.gather(*calls)
    removed = Counter(lfn for outcome in outcomes for lfn, answer in outcome["successful"].items()
                      if answer["removed"])
    assert all(not outcome["failed"] for outcome in outcomes), [o["failed"] for o in outcomes]
    assert sorted(removed) == sorted(lfns) and set(removed.values()) == {1}
    assert await db["files"].count_documents({}) == 0
    assert (await directory_usage(db, "/vo"))["files"] == 0
    assert {u["se"]: (u["replicas"], u["bytes"]) for u in await se_usage(db)} == {
        "CERN-DISK": (0, 0), "DESY-DISK": (0, 0)}
    await assert_exact(db)


async def test_a_single_file_removal_racing_a_bulk_one_counts_once(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    lfns = [f"/vo/one/f{i:02d}" for i in range(40)]
    await registered(db, lfns, replicas=False)

    async def one(lfn: str) -> int:
        try:
            return await remove(db, ADMIN, lfn)
        except (NotFound, Conflict):  # gone already, or being removed by the bulk call
            return 0

    bulk, singles = await asyncio.gather(remove_files(db, ADMIN, lfns),
                                         asyncio.gather(*(one(lfn) for lfn in lfns[::2])))
    by_bulk = {lfn for lfn, answer in bulk["successful"].items() if answer["removed"]}
    assert len(by_bulk) + sum(singles) == len(lfns)
    assert await db["files"].count_documents({}) == 0
    await assert_exact(db)


async def test_marks_of_a_removal_that_died_are_taken_over_after_the_lease(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    lfns = ["/vo/dead/a", "/vo/dead/b"]
    await registered(db, lfns)
    dead = await claim_removals(db, lfns, FIELDS, force=True)  # marked, then the call died
    assert sorted(dead.records) == lfns
    shown = await stat(db, ADMIN, "/vo/dead/a")
    assert REMOVING not in shown and shown["size"] == 100  # readers see the record as it was
    # Within the lease the marks are another call's: the removal waits, then says so.
    early = await remove_files(db, ADMIN, lfns, force=True)
    assert sorted(early["failed"]) == lfns and "being removed by another request" in early["failed"][lfns[0]]
    assert await db["files"].count_documents({}) == 2
    await db["files"].update_many({}, {"$set": {f"{REMOVING}.at": dead.mark.at - REMOVAL_LEASE * 2}})
    late = await remove_files(db, ADMIN, lfns, force=True)
    assert late == {"successful": {lfn: {"removed": True} for lfn in lfns}, "failed": {}}
    assert await delete_claimed(db, dead) == {}  # the dead call, were it to wake, counts nothing
    await assert_exact(db)


async def test_a_removal_waits_for_another_that_ends_and_reports_the_file_gone(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    await registered(db, ["/vo/wait/f"])
    first = await claim_removals(db, ["/vo/wait/f"], FIELDS, force=True)
    second = asyncio.ensure_future(remove_files(db, ADMIN, ["/vo/wait/f"], force=True))
    await asyncio.sleep(0.2)
    await record_files(db, (await delete_claimed(db, first)).values(), -1)
    assert await second == {"successful": {"/vo/wait/f": {"removed": False}}, "failed": {}}
    await assert_exact(db)


async def test_a_removal_past_half_its_lease_gives_up_and_a_release_frees_its_files(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    await registered(db, ["/vo/slow/f"])
    slow = await claim_removals(db, ["/vo/slow/f"], FIELDS, force=True)
    slow.mark.at -= REMOVAL_LEASE / 2 + dt.timedelta(seconds=1)
    with pytest.raises(ServiceUnavailable):
        await delete_claimed(db, slow)
    assert await db["files"].count_documents({REMOVING: {"$exists": True}}) == 1
    await release(db, slow)
    assert await db["files"].count_documents({REMOVING: {"$exists": True}}) == 0
    assert (await remove_files(db, ADMIN, ["/vo/slow/f"], force=True))["successful"]["/vo/slow/f"]["removed"]
    await assert_exact(db)


async def test_without_force_a_file_that_gained_a_replica_is_not_marked(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await registered(db, ["/vo/kept/f"])  # as if its replicas came after the caller's check
    claim = await claim_removals(db, ["/vo/kept/f"], FIELDS, force=False)
    assert claim.records == {} and claim.kept == {"/vo/kept/f": 2}
    assert await db["files"].count_documents({REMOVING: {"$exists": True}}) == 0


async def test_a_move_of_a_file_a_removal_holds_is_refused_and_the_removal_counts_it_once(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    await registered(db, ["/vo/mv/a/f"])
    claim = await claim_removals(db, ["/vo/mv/a/f"], FIELDS, force=True)
    with pytest.raises(Conflict):
        await move(db, ADMIN, "/vo/mv/a/f", "/vo/mv/b")
    assert await db["files"].count_documents({"_id": "/vo/mv/b"}) == 0
    removed = await delete_claimed(db, claim)
    assert list(removed) == ["/vo/mv/a/f"]
    await record_files(db, removed.values(), -1)
    await assert_exact(db)
    assert (await directory_usage(db, "/vo/mv"))["files"] == 0


async def test_removals_racing_through_the_api_and_the_cli_leave_usage_exact(api: RunningApi) -> None:
    lfns = [f"/vo/e2e/d{d}/f{i:03d}" for d in range(2) for i in range(150)]
    async with api.client() as admin:
        await admin.mkdir("/vo/e2e", parents=True)
        registered_now = await admin.register_files([{"lfn": lfn, "size": 1000, "adler32": "00000001"}
                                                     for lfn in lfns])
        assert not registered_now["failed"]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(api.client()) for _ in range(6)]
        bulk = [client.remove_files(lfns[k:] + lfns[:k]) for k, client in zip(range(0, 300, 50), clients, strict=True)]
        singles = [run_cli(api.url, api.admin_token, "rm", lfn) for lfn in lfns[::30]]
        answers, runs = await asyncio.gather(asyncio.gather(*bulk), asyncio.gather(*singles))
    by_bulk = Counter(lfn for answer in answers for lfn, result in answer["successful"].items()
                      if result["removed"])
    # A `cairn rm` whose file a bulk call took between its look and its removal answers "removed 0".
    by_cli = [done for done in runs if done.returncode == 0 and "removed 1 entry" in done.stdout]
    assert max(by_bulk.values()) == 1 and len(by_bulk) + len(by_cli) == len(lfns)
    usage = await run_cli(api.url, api.admin_token, "usage", "dir", "/vo/e2e", "--json")
    assert json.loads(usage.stdout) == {"path": "/vo/e2e", "files": 0, "bytes": 0}, usage.stderr
    report = await run_cli(api.url, api.admin_token, "usage", "rebuild", "--dry-run", "--json")
    assert json.loads(report.stdout)["drifted"] == 0, report.stdout


async def test_a_tree_removal_racing_removals_of_its_files_counts_each_once(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    lfns = [f"/vo/tree/t/d{d}/f{i:03d}" for d in range(3) for i in range(400)]
    await registered(db, lfns)
    await registered(db, ["/vo/tree/kept"])
    tree = asyncio.ensure_future(remove(db, ADMIN, "/vo/tree/t", recursive=True))
    bulk = await asyncio.gather(*(remove_files(db, ADMIN, lfns[k::3], force=True) for k in range(3)))
    try:
        entries = await tree
    except Conflict:  # it met files the bulk calls held: those are gone now, so it completes again
        entries = await remove(db, ADMIN, "/vo/tree/t", recursive=True)
    by_bulk = sum(answer["removed"] for outcome in bulk for answer in outcome["successful"].values())
    assert by_bulk + entries >= len(lfns)  # the directories count among the tree's entries
    assert await db["files"].count_documents({}) == 1
    assert (await directory_usage(db, "/vo"))["files"] == 1
    assert {u["se"]: u["replicas"] for u in await se_usage(db)} == {"CERN-DISK": 1, "DESY-DISK": 1}
    await assert_exact(db)
