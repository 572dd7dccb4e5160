"""Regression tests of the sixth catalogue audit: routes that answered a hidden file differently
from a missing one, or changed it (tests.fixtures.authz: carol is in bob's dataset's group but
cannot reach /lhcb/data)."""

from __future__ import annotations

import asyncio
import contextlib

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import DATASET_FILES, DETACHING, attach_files, detach_files
from catalogue.dataset_refresh import refresh
from catalogue.datasets import DidIn, change_state, create_did, get_did
from catalogue.files import register_files
from kernel.db import Document
from kernel.errors import Conflict
from tests.fixtures.authz import DATASET, MISSING, PRIVATE, SHARED, World, same_answer
from tests.fixtures.catalogue import ADMIN, ALICE


async def test_detach_answers_a_hidden_file_like_one_not_attached_and_keeps_it(world: World) -> None:
    hidden = await world.call("carol", "POST", "/dids/detach", {"did": DATASET, "lfns": [PRIVATE]})
    missing = await world.call("carol", "POST", "/dids/detach", {"did": DATASET, "lfns": [MISSING]})
    assert hidden[0] == 200 and same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)
    _, bobs = await world.call("bob", "GET", "/dids/contents", params={"did": DATASET})
    assert PRIVATE in [m["lfn"] for m in bobs["members"]]
    _, did = await world.call("bob", "GET", "/dids", params={"did": DATASET})
    assert did["files"] == 2
    detached = await world.call("bob", "POST", "/dids/detach", {"did": DATASET, "lfns": [PRIVATE]})
    assert detached == (200, {"successful": {PRIVATE: {"detached": True}}, "failed": {}})


async def test_a_freeze_during_a_refresh_leaves_the_frozen_contents_as_they_were(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await register_files(db, ADMIN, [{"lfn": f"/cta/big/f{i:05d}", "size": 1, "adler32": "00000001"}
                                     for i in range(6000)])
    await create_did(db, ALICE, DidIn(did="cta:dyn", query="size >= 0", path="/cta/big"))
    refreshing = asyncio.create_task(refresh(db, ALICE, "cta:dyn"))
    for _ in range(10_000):  # until its first rows are in
        if await db[DATASET_FILES].count_documents({"did": "cta:dyn"}) or refreshing.done():
            break
        await asyncio.sleep(0.005)
    try:
        frozen = await change_state(db, ALICE, "cta:dyn", "freeze")
    except Conflict:  # refused while the refresh writes: the refresh ends and the dataset stays open
        frozen = None
    rows_at_freeze = await db[DATASET_FILES].count_documents({"did": "cta:dyn"})
    with contextlib.suppress(Conflict):
        await refreshing
    doc = await get_did(db, "cta:dyn")
    rows = await db[DATASET_FILES].count_documents({"did": "cta:dyn"})
    if frozen is not None:
        assert (rows, doc["files"]) == (rows_at_freeze, rows_at_freeze), (rows_at_freeze, rows, doc["files"])
    else:
        assert doc["state"] == "open" and rows == doc["files"] == 6000


async def test_a_freeze_during_a_detach_leaves_the_frozen_contents_as_they_were(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    lfns = [f"/cta/big/f{i:05d}" for i in range(6000)]
    await register_files(db, ADMIN, [{"lfn": lfn, "size": 1, "adler32": "00000001"} for lfn in lfns])
    await create_did(db, ALICE, DidIn(did="cta:ds"))
    await attach_files(db, ALICE, "cta:ds", lfns)
    detaching = asyncio.create_task(detach_files(db, ALICE, "cta:ds", lfns))
    for _ in range(10_000):  # until it has marked its rows
        if await db[DATASET_FILES].count_documents({"did": "cta:ds", DETACHING: {"$exists": True}}) \
                or detaching.done():
            break
        await asyncio.sleep(0.002)
    await change_state(db, ALICE, "cta:ds", "freeze")
    rows_at_freeze = await db[DATASET_FILES].count_documents({"did": "cta:ds"})
    with contextlib.suppress(Conflict):
        await detaching
    doc = await get_did(db, "cta:ds")
    rows = await db[DATASET_FILES].count_documents({"did": "cta:ds"})
    assert (rows_at_freeze, rows, doc["files"]) == (6000, 6000, 6000)


async def test_a_refresh_by_a_member_who_cannot_read_a_file_leaves_its_row(world: World) -> None:
    made = await world.call("bob", "POST", "/dids", {"did": "lhcb:dyn", "query": "size >= 0", "path": "/lhcb"})
    assert made[0] == 201 and made[1]["files"] == 2, made
    assert (await world.call("carol", "POST", "/dids/refresh", {"did": "lhcb:dyn"}))[0] == 200
    _, bobs = await world.call("bob", "GET", "/dids/contents", params={"did": "lhcb:dyn"})
    assert [m["lfn"] for m in bobs["members"]] == [PRIVATE, SHARED]
    _, did = await world.call("bob", "GET", "/dids", params={"did": "lhcb:dyn"})
    assert (did["files"], did["bytes"]) == (2, made[1]["bytes"])


async def test_a_refused_directory_move_does_not_name_a_file_the_mover_cannot_reach(world: World) -> None:
    async with world.client("bob") as bob:
        await bob.mkdir("/lhcb/shared", mode=0o770)  # carol (group lhcb) may move what is in it
        for name in ("priv", "open"):
            await bob.mkdir(f"/lhcb/shared/{name}", mode=0o700 if name == "priv" else 0o750)
    files = [{"lfn": f"/lhcb/shared/{name}/secret.root", "size": 1, "adler32": "00000001"} for name in ("priv", "open")]
    assert (await world.call("bob", "POST", "/files/register", {"files": files}))[0] == 200
    attached = await world.call("bob", "POST", "/dids/attach", {"did": DATASET, "lfns": [f["lfn"] for f in files]})
    assert attached[0] == 200, attached
    hidden = await world.call("carol", "POST", "/namespace/move", {"source": "/lhcb/shared/priv",
                                                                    "destination": "/lhcb/shared/privx"})
    assert hidden[0] == 409 and "secret" not in hidden[1]["message"], hidden
    assert hidden[1]["message"].startswith("a file below /lhcb/shared/priv is attached to a dataset")
    shown = await world.call("carol", "POST", "/namespace/move", {"source": "/lhcb/shared/open",
                                                                   "destination": "/lhcb/shared/openx"})
    assert shown[0] == 409 and shown[1]["message"].startswith("/lhcb/shared/open/secret.root is attached"), shown
