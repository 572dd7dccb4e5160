"""Datasets and containers: names, the state machine, counts, dynamic datasets, cycles."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import (
    attach_children,
    attach_files,
    detach_children,
    detach_files,
    list_page,
    open_contents,
)
from catalogue.dataset_refresh import refresh
from catalogue.datasets import DidIn, change_state, create_did, get_did
from catalogue.files import register_files
from catalogue.metadata import set_metadata
from catalogue.metadata_fields import FieldDeclaration, declare_field
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.fixtures.catalogue import ADMIN, ALICE, BOB


@pytest.fixture
async def files(catalogue_db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    await declare_field(catalogue_db, FieldDeclaration(key="run", type="int"))
    await register_files(catalogue_db, ADMIN, [
        {"lfn": f"/cta/d/f{i}", "size": 100 + i, "adler32": "00000001", "meta": {"run": i}} for i in range(6)])
    return catalogue_db


async def dataset(db: AsyncDatabase[Document], did: str = "cta:ds1", **kw: object) -> Document:
    return await create_did(db, ALICE, DidIn(did=did, **kw))  # type: ignore[arg-type]


async def lfns(db: AsyncDatabase[Document], did: str) -> list[str]:
    return [row.get("lfn") or row["did"] async for row in await open_contents(db, did)]


async def test_names_are_scope_colon_name_in_a_scope_the_caller_may_use(files: AsyncDatabase[Document]) -> None:
    for bad in ("nocolon", "Cta:x", "cta:a/b", "cta:x:y", "cta:", ":x"):
        with pytest.raises(InvalidInput):
            await dataset(files, bad)
    with pytest.raises(Forbidden):
        await dataset(files, "km3net:x")
    assert (await dataset(files, "user.alice:mine"))["owner"] == "alice"
    await dataset(files)
    with pytest.raises(Conflict):
        await dataset(files)


async def test_attach_and_detach_keep_file_count_and_bytes(files: AsyncDatabase[Document]) -> None:
    await dataset(files)
    result = await attach_files(files, ALICE, "cta:ds1", ["/cta/d/f0", "/cta/d/f1", "/cta/d/f1", "/cta/d/none"])
    assert result["failed"] == {"/cta/d/none": "no such file"}
    again = await attach_files(files, ALICE, "cta:ds1", ["/cta/d/f1", "/cta/d/f2"])
    assert again["successful"] == {"/cta/d/f1": {"attached": False}, "/cta/d/f2": {"attached": True}}
    doc = await get_did(files, "cta:ds1")
    assert (doc["files"], doc["bytes"]) == (3, 100 + 101 + 102)
    detached = await detach_files(files, ALICE, "cta:ds1", ["/cta/d/f0", "/cta/d/f5"])
    assert detached["failed"] == {"/cta/d/f5": "not in cta:ds1"}
    doc = await get_did(files, "cta:ds1")
    assert (doc["files"], doc["bytes"]) == (2, 101 + 102)
    assert await lfns(files, "cta:ds1") == ["/cta/d/f1", "/cta/d/f2"]


async def test_contents_page_by_lfn(files: AsyncDatabase[Document]) -> None:
    await dataset(files)
    await attach_files(files, ALICE, "cta:ds1", [f"/cta/d/f{i}" for i in range(6)])
    first = await list_page(files, "cta:ds1", limit=4)
    assert [m["lfn"] for m in first["members"]] == [f"/cta/d/f{i}" for i in range(4)]
    second = await list_page(files, "cta:ds1", after=first["next_after"], limit=4)
    assert [m["lfn"] for m in second["members"]] == ["/cta/d/f4", "/cta/d/f5"] and second["next_after"] is None
    # Another dataset's rows interleave in the index; a page reads only this one's, in order.
    await create_did(files, ALICE, DidIn(did="cta:ds2"))
    await attach_files(files, ALICE, "cta:ds2", [f"/cta/d/f{i}" for i in range(1, 6, 2)])
    between = await list_page(files, "cta:ds2", after="/cta/d/f1+", limit=1)  # a path between two LFNs
    assert [m["lfn"] for m in between["members"]] == ["/cta/d/f3"] and between["next_after"] == "/cta/d/f3"
    for bad in ('/cta/d/f1"', "f1", "/cta/../d"):  # not an LFN: the index order it is read in would not hold
        with pytest.raises(InvalidInput):
            await list_page(files, "cta:ds1", after=bad)


async def test_state_machine(files: AsyncDatabase[Document]) -> None:
    await dataset(files)
    await change_state(files, ALICE, "cta:ds1", "close")
    with pytest.raises(Conflict, match="closed"):
        await attach_files(files, ALICE, "cta:ds1", ["/cta/d/f0"])
    with pytest.raises(Conflict):
        await change_state(files, ALICE, "cta:ds1", "close")
    await change_state(files, ALICE, "cta:ds1", "reopen")
    await attach_files(files, ALICE, "cta:ds1", ["/cta/d/f0"])
    await change_state(files, ALICE, "cta:ds1", "freeze")
    for action in ("reopen", "close", "freeze"):
        with pytest.raises(Conflict, match="frozen"):
            await change_state(files, ADMIN, "cta:ds1", action)
    with pytest.raises(Conflict, match="frozen"):
        await detach_files(files, ALICE, "cta:ds1", ["/cta/d/f0"])
    assert (await get_did(files, "cta:ds1"))["files"] == 1


async def test_only_owner_or_admin_reopen_and_strangers_change_nothing(files: AsyncDatabase[Document]) -> None:
    await dataset(files)
    with pytest.raises(Forbidden):
        await attach_files(files, BOB, "cta:ds1", ["/cta/d/f0"])
    with pytest.raises(Forbidden):
        await change_state(files, BOB, "cta:ds1", "close")
    await change_state(files, ALICE, "cta:ds1", "close")
    with pytest.raises(Forbidden):
        await change_state(files, BOB, "cta:ds1", "reopen")
    await change_state(files, ADMIN, "cta:ds1", "reopen")


async def test_dynamic_dataset_refreshes_then_freezes_into_a_snapshot(files: AsyncDatabase[Document]) -> None:
    await dataset(files, "cta:dyn", query="run>=3", path="/cta")
    await refresh(files, ALICE, "cta:dyn")
    assert await lfns(files, "cta:dyn") == ["/cta/d/f3", "/cta/d/f4", "/cta/d/f5"]
    await set_metadata(files, ADMIN, "/cta/d/f5", {"run": 1})
    await set_metadata(files, ADMIN, "/cta/d/f0", {"run": 9})
    doc = await refresh(files, ALICE, "cta:dyn")
    assert await lfns(files, "cta:dyn") == ["/cta/d/f0", "/cta/d/f3", "/cta/d/f4"]
    assert (doc["files"], doc["bytes"]) == (3, 100 + 103 + 104) and doc["refreshed"] is not None
    with pytest.raises(InvalidInput, match="dynamic"):
        await attach_files(files, ALICE, "cta:dyn", ["/cta/d/f1"])
    await change_state(files, ALICE, "cta:dyn", "freeze")
    await set_metadata(files, ADMIN, "/cta/d/f1", {"run": 9})
    with pytest.raises(Conflict, match="frozen"):
        await refresh(files, ALICE, "cta:dyn")
    assert await lfns(files, "cta:dyn") == ["/cta/d/f0", "/cta/d/f3", "/cta/d/f4"]


async def test_a_bad_dynamic_query_is_refused_at_creation(files: AsyncDatabase[Document]) -> None:
    with pytest.raises(InvalidInput, match="position"):
        await dataset(files, "cta:bad", query="run>=x")
    with pytest.raises(NotFound):
        await get_did(files, "cta:bad")


async def test_containers_nest_and_refuse_cycles(files: AsyncDatabase[Document]) -> None:
    for name in ("top", "mid", "low"):
        await dataset(files, f"cta:{name}", type="container")
    await dataset(files)
    await attach_children(files, ALICE, "cta:top", ["cta:mid"])
    await attach_children(files, ALICE, "cta:mid", ["cta:low", "cta:ds1"])
    for parent, child in (("cta:low", "cta:top"), ("cta:low", "cta:mid"), ("cta:top", "cta:top")):
        with pytest.raises(Conflict, match="cycle"):
            await attach_children(files, ALICE, parent, [child])
    assert await lfns(files, "cta:low") == []
    with pytest.raises(NotFound):
        await attach_children(files, ALICE, "cta:top", ["cta:nothing"])
    assert await lfns(files, "cta:mid") == ["cta:ds1", "cta:low"]
    await detach_children(files, ALICE, "cta:mid", ["cta:low"])
    assert (await get_did(files, "cta:mid"))["children"] == 1
    await attach_children(files, ALICE, "cta:low", ["cta:top"])  # no cycle any more


async def test_a_containers_children_page_in_order_among_other_containers(files: AsyncDatabase[Document]) -> None:
    for name in ("c1", "c2", *(f"d{i}" for i in range(5))):
        await dataset(files, f"cta:{name}", type="container" if name.startswith("c") else "dataset")
    await attach_children(files, ALICE, "cta:c1", [f"cta:d{i}" for i in range(5)])
    await attach_children(files, ALICE, "cta:c2", ["cta:d0", "cta:d3"])  # rows interleaved with c1's in the index
    first = await list_page(files, "cta:c1", limit=2)
    assert [m["did"] for m in first["members"]] == ["cta:d0", "cta:d1"] and first["next_after"] == "cta:d1"
    rest = await list_page(files, "cta:c1", after=first["next_after"], limit=10)
    assert [m["did"] for m in rest["members"]] == ["cta:d2", "cta:d3", "cta:d4"] and rest["next_after"] is None
    assert [m["did"] for m in (await list_page(files, "cta:c2", after="cta:d0"))["members"]] == ["cta:d3"]
    with pytest.raises(InvalidInput):
        await list_page(files, "cta:c1", after='cta:d"1')
