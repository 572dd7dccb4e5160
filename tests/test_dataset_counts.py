"""A dataset's `files` and `bytes` equal the rows it holds: when several calls attach or detach
the same files at once (two users, a client retrying a request that timed out), when an attach
is cut short by a real database outage after its rows went in, and, after a call cut short left
it counting rows it does not hold, once an administrator rebuilt the counts from the rows
(`cairn dataset rebuild-counts`, `POST /dids/rebuild-counts`)."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue import change_feed, dataset_recount
from catalogue.collection_names import CONTAINER_CHILDREN
from catalogue.dataset_contents import DATASET_FILES, attach_children, attach_files, detach_children, detach_files
from catalogue.datasets import DidIn, create_did, get_did
from catalogue.files import register_files
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN, ALICE
from tests.fixtures.cli import cli_json, run_cli
from tests.fixtures.tcp_gate import TcpGate, cut_short

DID = "cta:ds1"
LFNS = [f"/cta/d/f{i:02d}" for i in range(20)]
SIZE = 100
CALLS = 4


@pytest.fixture
async def db(catalogue_db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    """Twenty files of SIZE bytes and an empty open dataset of alice's."""
    await register_files(catalogue_db, ADMIN, [{"lfn": lfn, "size": SIZE, "adler32": "00000001"} for lfn in LFNS])
    await create_did(catalogue_db, ALICE, DidIn(did=DID))
    return catalogue_db


async def counts(db: AsyncDatabase[Document], did: str = DID) -> tuple[int, int]:
    doc = await get_did(db, did)
    return int(doc["files"]), int(doc["bytes"])


async def rows(db: AsyncDatabase[Document], did: str = DID) -> tuple[int, int]:
    found = await db[DATASET_FILES].find({"did": did}, {"size": 1}).to_list()
    return len(found), sum(int(row["size"]) for row in found)


async def test_concurrent_detaches_of_the_same_files_take_each_off_once(db: AsyncDatabase[Document]) -> None:
    await attach_files(db, ALICE, DID, LFNS)
    answers = await asyncio.gather(*(detach_files(db, ALICE, DID, LFNS[:10]) for _ in range(CALLS)))
    assert await rows(db) == await counts(db) == (10, 10 * SIZE)
    detached = [lfn for answer in answers for lfn, result in answer["successful"].items() if result["detached"]]
    assert sorted(detached) == LFNS[:10]  # each by exactly one call
    events = [e for e in await change_feed.read(db, 0, 1000) if e["kind"] == "detached"]
    assert sorted(e["data"]["member"] for e in events) == LFNS[:10]
    assert (await dataset_recount.rebuild(db, fix=False))["drifted"] == 0


async def test_concurrent_attaches_of_the_same_files_count_each_once(db: AsyncDatabase[Document]) -> None:
    answers = await asyncio.gather(*(attach_files(db, ALICE, DID, LFNS) for _ in range(CALLS)))
    assert await rows(db) == await counts(db) == (20, 20 * SIZE)
    attached = [lfn for answer in answers for lfn, result in answer["successful"].items() if result["attached"]]
    assert sorted(attached) == LFNS


async def test_an_attach_cut_short_after_its_rows_went_in_counts_them(
    db: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate,
) -> None:
    await cut_short(db_gate, settings.database, "insert", DATASET_FILES,
                    lambda gated: attach_files(gated, ALICE, DID, LFNS))
    assert await rows(db) == await counts(db) == (20, 20 * SIZE)
    assert (await attach_files(db, ALICE, DID, LFNS))["successful"][LFNS[0]] == {"attached": False}  # the retry
    assert await counts(db) == (20, 20 * SIZE)


async def test_counts_left_by_calls_cut_short_are_rebuilt_through_the_api_and_the_cli(
    db: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate, api: RunningApi, admin: Client,
) -> None:
    # A detach cut after its delete (before the transfer workers' sweep recounts it:
    # tests/test_dataset_count_claims.py).
    await attach_files(db, ALICE, DID, LFNS)
    await cut_short(db_gate, settings.database, "delete", DATASET_FILES,
                    lambda gated: detach_files(gated, ALICE, DID, LFNS[:5]))
    await create_did(db, ALICE, DidIn(did="cta:c1", type="container"))
    await attach_children(db, ALICE, "cta:c1", [DID])
    assert (await rows(db), await counts(db)) == ((15, 15 * SIZE), (20, 20 * SIZE))

    report = await admin.rebuild_did_counts(fix=False)
    assert (report["checked"], report["drifted"], report["fixed"]) == (2, 1, False)
    assert report["drift"] == {DID: {"stored": {"files": 20, "bytes": 20 * SIZE},
                                     "recounted": {"files": 15, "bytes": 15 * SIZE}}}
    assert await counts(db) == (20, 20 * SIZE)  # a dry run changes nothing
    fixed = await run_cli(api.url, api.admin_token, "dataset", "rebuild-counts")
    assert fixed.returncode == 0 and "1 of 2 drifted (fixed)" in fixed.stdout, fixed.stderr
    assert await counts(db) == (15, 15 * SIZE)
    again = await cli_json(api.url, api.admin_token, "dataset", "rebuild-counts", "--dry-run")
    assert isinstance(again, dict) and (again["drifted"], again["moved"]) == (0, [])


async def test_a_container_attach_cut_short_after_its_links_went_in_counts_them(
    db: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate,
) -> None:
    await create_did(db, ALICE, DidIn(did="cta:ds2"))
    await create_did(db, ALICE, DidIn(did="cta:c1", type="container"))
    await cut_short(db_gate, settings.database, "insert", CONTAINER_CHILDREN,
                    lambda gated: attach_children(gated, ALICE, "cta:c1", [DID, "cta:ds2"]))
    assert (await get_did(db, "cta:c1"))["children"] == 2
    retried = await asyncio.gather(*(attach_children(db, ALICE, "cta:c1", [DID, "cta:ds2"]) for _ in range(CALLS)))
    assert not any(result["attached"] for answer in retried for result in answer["successful"].values())
    assert (await get_did(db, "cta:c1"))["children"] == 2
    assert (await dataset_recount.rebuild(db, fix=False))["drifted"] == 0


async def test_concurrent_detaches_of_the_same_children_take_each_off_once(db: AsyncDatabase[Document]) -> None:
    children = [f"cta:part{i}" for i in range(6)]
    for child in children:
        await create_did(db, ALICE, DidIn(did=child))
    await create_did(db, ALICE, DidIn(did="cta:c1", type="container"))
    await attach_children(db, ALICE, "cta:c1", children)
    answers = await asyncio.gather(*(detach_children(db, ALICE, "cta:c1", children[:4]) for _ in range(CALLS)))
    assert (await get_did(db, "cta:c1"))["children"] == 2
    detached = [c for answer in answers for c, result in answer["successful"].items() if result["detached"]]
    assert sorted(detached) == children[:4]  # each by exactly one call
    events = [e for e in await change_feed.read(db, 0, 1000) if e["kind"] == "detached"]
    assert sorted(e["data"]["member"] for e in events) == children[:4]
