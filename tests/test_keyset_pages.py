"""Large results are read in keyset pages (kernel.db.pages_by_id, and kernel.db.stream_pages for
responses): every entry once, in `_id` order, across pages, while others insert; ls and find
over many pages."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

import kernel.db
from catalogue.files import register_files
from catalogue.find import open_query
from catalogue.namespace import list_directory, open_directory
from kernel.db import Document, pages_by_id, stream_pages
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pages of 7 documents (streamed ones growing from 2), so a few dozen entries span many pages."""
    monkeypatch.setattr(kernel.db, "PAGE", 7)
    monkeypatch.setattr(kernel.db, "FIRST_PAGE", 2)
    monkeypatch.setattr(kernel.db, "STREAM_PAGE", 7)
    return 7


async def test_pages_return_every_entry_once_in_order_while_others_insert(
    database: AsyncDatabase[Document], small_pages: int,
) -> None:
    probe = database["keyset_probe"]
    present = [f"/k/d/f{i:04d}" for i in range(0, 300, 2)]
    await probe.insert_many([{"_id": lfn, "parent": "/k/d"} for lfn in present])
    # In the range but filtered out (deeper down), and outside the range.
    await probe.insert_many([{"_id": f"/k/d/f{i:04d}/x", "parent": f"/k/d/f{i:04d}"} for i in range(0, 300, 10)])
    await probe.insert_many([{"_id": f"/k/e{i}", "parent": "/k/d"} for i in range(5)])
    listing_done = asyncio.Event()
    inserted_during: list[str] = []

    async def insert_meanwhile() -> None:
        for i in range(1, 300, 2):
            if listing_done.is_set():
                return
            await probe.insert_one({"_id": f"/k/d/f{i:04d}", "parent": "/k/d"})
            inserted_during.append(f"/k/d/f{i:04d}")
            await asyncio.sleep(0)

    inserter = asyncio.create_task(insert_meanwhile())
    seen = []
    async for doc in pages_by_id(probe, {"parent": "/k/d"}, after="/k/d/", before="/k/d0"):
        seen.append(doc["_id"])
        await asyncio.sleep(0)
    listing_done.set()
    await inserter
    assert inserted_during, "nothing was inserted while the pages ran"
    assert len(seen) > 3 * small_pages
    assert seen == sorted(set(seen)), "out of order or returned twice"
    assert set(present) <= set(seen), "an entry present throughout was skipped"
    assert set(seen) <= set(present) | set(inserted_during)


async def test_a_limit_and_bounds_cut_the_pages(database: AsyncDatabase[Document], small_pages: int) -> None:
    probe = database["keyset_limit"]
    await probe.insert_many([{"_id": f"/l/{i:03d}"} for i in range(50)])
    got = [d["_id"] async for d in pages_by_id(probe, {}, after="/l/009", before="/l/040", limit=20)]
    assert got == [f"/l/{i:03d}" for i in range(10, 30)]
    assert [d["_id"] async for d in pages_by_id(probe, {}, after="/l/045")] == [f"/l/{i:03d}" for i in range(46, 50)]


async def test_streamed_pages_grow_from_a_small_first_page_and_hold_every_entry_once(
    database: AsyncDatabase[Document], small_pages: int,
) -> None:
    probe = database["keyset_stream"]
    await probe.insert_many([{"_id": f"/s/{i:03d}"} for i in range(30)])
    pages = [[d["_id"] for d in page] async for page in stream_pages(probe, {}, after="/s/", before="/s0")]
    assert [len(page) for page in pages] == [2, 4, 7, 7, 7, 3]
    assert [key for page in pages for key in page] == [f"/s/{i:03d}" for i in range(30)]
    cut = [d["_id"] async for page in stream_pages(probe, {}, after="/s/004", limit=9) for d in page]
    assert cut == [f"/s/{i:03d}" for i in range(5, 14)]


async def test_ls_and_find_over_many_pages_return_each_entry_once_by_name(
    catalogue_db: AsyncDatabase[Document], small_pages: int,
) -> None:
    names = [f"f{i:03d}" for i in range(40)]
    files = [{"lfn": f"/cta/big/{n}", "size": 1, "adler32": "00000001", "meta": {"run": i}}
             for i, n in enumerate(names)]
    # Subdirectories whose own files sit between the directory's entries in `_id` order.
    files += [{"lfn": f"/cta/big/{n}.d/inner{j}", "size": 1, "adler32": "00000001", "meta": {"run": 99}}
              for n in names[::9] for j in range(3)]
    outcome = await register_files(catalogue_db, ADMIN, files)
    assert not outcome["failed"]
    expected = sorted(names + [f"{n}.d" for n in names[::9]])
    streamed = [e["name"] async for e in await open_directory(catalogue_db, ADMIN, "/cta/big")]
    assert streamed == expected
    paged: list[str] = []
    after = None
    while True:
        page = await list_directory(catalogue_db, ADMIN, "/cta/big", after=after, limit=6)
        paged += [e["name"] for e in page["entries"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert paged == expected
    found = [d["_id"] async for d in await open_query(catalogue_db, ADMIN, "run<99", scope="/cta/big")]
    assert found == [f"/cta/big/{n}" for n in names]
    later = [d["_id"] async for d in await open_query(catalogue_db, ADMIN, "run>=0", scope="/cta/big",
                                                      after="/cta/big/f030", limit=10)]
    assert later == sorted(f["lfn"] for f in files if f["lfn"] > "/cta/big/f030")[:10]


async def test_memory_holds_one_page_however_many_pages_are_read(database: AsyncDatabase[Document]) -> None:
    """The auditor walks a whole SE this way: the peak must not be two pages (the previous one
    kept while the next is read: 1.5x one page's peak here) nor grow with the number of pages."""

    probe = database["keyset_memory"]
    page = 200
    await probe.insert_many([{"_id": f"/m/f{i:05d}", "pad": "x" * 4000} for i in range(5 * page)])

    async def peak(limit: int) -> int:
        tracemalloc.start()
        try:
            count = 0
            async for _doc in pages_by_id(probe, {}, limit=limit, page=page):
                count += 1
            assert count == limit
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one_page = await peak(page)
    five_pages = await peak(5 * page)
    assert one_page > page * 4000, "the page's documents were not traced"
    assert five_pages < 1.25 * one_page, (one_page, five_pages)


class FindRecorder(monitoring.CommandListener):
    """The filter of every `find` a client sends and how many documents came back."""

    def __init__(self) -> None:
        self.filters: list[dict] = []
        self.returned = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(dict(event.command.get("filter", {})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor", {})
            self.returned += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A failed command returned no documents: nothing to count."""


async def test_ls_reads_id_ranges_that_jump_over_the_subtrees_below(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    # Children whose names sort around the subdirectory `sub` and its subtree (`sub/` .. `sub0`,
    # with `sub0` itself a child), and 400 files and 20 directories down in the subtree.
    children = ["a", "sub", "sub-x", "sub.txt", "sub0", "z"]
    files = [{"lfn": f"/cta/d/{n}", "size": 1, "adler32": "00000001"} for n in ("a", "sub.txt", "sub0", "z")]
    files += [{"lfn": f"/cta/d/sub/s{i % 20:02d}/f{i:03d}", "size": 1, "adler32": "00000001"} for i in range(400)]
    files += [{"lfn": "/cta/d/sub-x/f", "size": 1, "adler32": "00000001"}]
    assert not (await register_files(catalogue_db, ADMIN, files))["failed"]
    recorder = FindRecorder()
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, event_listeners=[recorder])
    try:
        db = client[settings.database]
        streamed = [e["name"] async for e in await open_directory(db, ADMIN, "/cta/d")]
        first = await list_directory(db, ADMIN, "/cta/d", limit=3)
        rest = await list_directory(db, ADMIN, "/cta/d", after=first["next_after"], limit=3)
        paged = [e["name"] for e in first["entries"] + rest["entries"]]
        below = [e["name"] async for e in await open_directory(db, ADMIN, "/cta/d/sub")]
    finally:
        await client.close()
    assert streamed == children and paged == children
    assert below == [f"s{i:02d}" for i in range(20)]
    listing_queries = [f for f in recorder.filters if set(f) == {"_id"} and not isinstance(f["_id"], str)]
    assert listing_queries, "no `_id` range was read"
    lookups = [f for f in recorder.filters if f not in listing_queries]
    assert all(set(f) == {"_id"} for f in lookups), f"a listing filtered on more than `_id`: {lookups}"
    # 6 + 6 + 20 entries listed, their directories looked up; the 420 records below `sub` are jumped.
    assert recorder.returned < 150, f"{recorder.returned} documents read for 32 entries"
