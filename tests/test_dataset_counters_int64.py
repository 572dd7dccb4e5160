"""A dataset's byte count past what an int64 holds (sizes are what clients claim): it is stored
at the bound, marked saturated, and every later attach, detach, refresh and recount of the
dataset is still written (an overflowing `$inc` was refused by the database: 500 on every later
attach of a sized file to that dataset)."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import attach_files, detach_files
from catalogue.dataset_recount import rebuild
from catalogue.dataset_refresh import refresh
from catalogue.datasets import DidIn, create_did, get_did
from catalogue.files import register_files
from catalogue.namespace import mkdir
from kernel.bounds import INT64_MAX
from kernel.db import Document
from tests.fixtures.catalogue import ADMIN, ALICE

HUGE = 2**62


@pytest.fixture
async def claimed(catalogue_db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    """An ordinary user's files whose claimed sizes together pass the int64 range, and one of 1000."""
    await mkdir(catalogue_db, ADMIN, "/cta/open", mode=0o777, parents=True)
    files = [{"lfn": f"/cta/open/{name}", "size": HUGE, "adler32": "00000001", "meta": {"kind": "huge"}}
             for name in ("a", "b", "c")]
    files.append({"lfn": "/cta/open/small", "size": 1000, "adler32": "00000001"})
    assert not (await register_files(catalogue_db, ALICE, files))["failed"]
    return catalogue_db


async def test_attaching_sizes_past_the_int64_range_saturates_the_bytes_and_stops_no_attach(
        claimed: AsyncDatabase[Document]) -> None:
    db = claimed
    await create_did(db, ALICE, DidIn(did="cta:big"))
    for name in ("a", "b", "c", "small"):
        outcome = await attach_files(db, ALICE, "cta:big", [f"/cta/open/{name}"])
        assert not outcome["failed"], outcome
    doc = await get_did(db, "cta:big")
    assert (doc["files"], doc["bytes"], doc.get("saturated")) == (4, INT64_MAX, True)
    assert not (await detach_files(db, ALICE, "cta:big", ["/cta/open/small"]))["failed"]
    assert (await get_did(db, "cta:big"))["files"] == 3


async def test_one_attach_whose_sizes_pass_the_int64_range_is_written(claimed: AsyncDatabase[Document]) -> None:
    db = claimed
    await create_did(db, ALICE, DidIn(did="cta:once"))
    outcome = await attach_files(db, ALICE, "cta:once", [f"/cta/open/{n}" for n in ("a", "b", "c", "small")])
    assert not outcome["failed"], outcome
    doc = await get_did(db, "cta:once")
    assert (doc["files"], doc["bytes"], doc.get("saturated")) == (4, INT64_MAX, True)


async def test_a_refresh_and_a_recount_past_the_int64_range_are_stored_saturated(
        claimed: AsyncDatabase[Document]) -> None:
    db = claimed
    await create_did(db, ALICE, DidIn(did="cta:dyn", query="kind = huge", path="/cta"))  # type: ignore[arg-type]
    await refresh(db, ALICE, "cta:dyn")
    doc = await get_did(db, "cta:dyn")
    assert (doc["files"], doc["bytes"], doc.get("saturated")) == (3, INT64_MAX, True)
    await create_did(db, ALICE, DidIn(did="cta:static"))
    await attach_files(db, ALICE, "cta:static", [f"/cta/open/{n}" for n in ("a", "b", "c")])
    await db["datasets"].update_many({}, {"$set": {"bytes": 0}, "$unset": {"saturated": ""}})  # drifted
    report = await rebuild(db, fix=True)
    assert report["moved"] == [] and report["drifted"] == 2, report
    assert (await rebuild(db, fix=False))["drifted"] == 0
    for did in ("cta:dyn", "cta:static"):
        doc = await get_did(db, did)
        assert (doc["bytes"], doc.get("saturated")) == (INT64_MAX, True), doc
