"""The namespace: mkdir -p, sorted keyset-paged and streamed listings, stat, move, remove, chmod/chown."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import get_file, register_files
from catalogue.moves import move
from catalogue.namespace import chmod, chown, list_directory, mkdir, open_directory, remove, stat
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.fixtures.catalogue import ADMIN, ALICE


def a_file(lfn: str) -> dict:
    return {"lfn": lfn, "size": 1, "adler32": "00000001"}


async def test_mkdir_needs_the_parent_unless_parents(catalogue_db: AsyncDatabase[Document]) -> None:
    with pytest.raises(NotFound):
        await mkdir(catalogue_db, ADMIN, "/cta/a/b")
    created = await mkdir(catalogue_db, ADMIN, "/cta/a/b", parents=True, mode=0o750)
    assert created["path"] == "/cta/a/b" and created["mode"] == 0o750
    assert (await stat(catalogue_db, ADMIN, "/cta/a"))["mode"] == 0o775
    assert (await mkdir(catalogue_db, ADMIN, "/cta/a/b", parents=True))["path"] == "/cta/a/b"
    with pytest.raises(Conflict):
        await mkdir(catalogue_db, ADMIN, "/cta/a/b")


async def test_mkdir_refuses_a_path_below_a_file(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/f")])
    with pytest.raises(Conflict, match="is a file"):
        await mkdir(catalogue_db, ADMIN, "/cta/f/sub", parents=True)


async def test_listing_is_sorted_across_directories_and_files_and_pages_by_name(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await register_files(catalogue_db, ADMIN, [a_file(f"/cta/d/f{i:02d}") for i in range(0, 10, 2)])
    for i in range(1, 10, 2):
        await mkdir(catalogue_db, ADMIN, f"/cta/d/f{i:02d}")
    names = []
    after = None
    while True:
        page = await list_directory(catalogue_db, ADMIN, "/cta/d", after=after, limit=3)
        names += [e["name"] for e in page["entries"]]
        assert len(page["entries"]) <= 3
        after = page["next_after"]
        if after is None:
            break
    assert names == [f"f{i:02d}" for i in range(10)]
    streamed = [e async for e in await open_directory(catalogue_db, ADMIN, "/cta/d")]
    assert [e["name"] for e in streamed] == names
    assert [e["type"] for e in streamed[:2]] == ["file", "directory"]
    assert "replicas" not in streamed[0]


async def test_listing_a_file_or_a_missing_directory_is_refused(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/f")])
    with pytest.raises(InvalidInput, match="not a directory"):
        await list_directory(catalogue_db, ADMIN, "/cta/f")
    with pytest.raises(NotFound):
        await list_directory(catalogue_db, ADMIN, "/nowhere")


async def test_stat_of_a_file_shows_its_replicas(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [{**a_file("/cta/f"), "replicas": [{"se": "CERN-TAPE"}]}])
    entry = await stat(catalogue_db, ADMIN, "/cta/f")
    assert entry["type"] == "file" and entry["replicas"][0]["url"] == "root://cta.cern.ch//tape/cta/f"
    assert (await stat(catalogue_db, ADMIN, "/"))["type"] == "directory"


async def test_moving_a_file_keeps_its_record_and_replica_urls(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [{**a_file("/cta/a/f"), "replicas": [{"se": "CERN-DISK"}]}])
    await mkdir(catalogue_db, ADMIN, "/cta/b")
    before = await get_file(catalogue_db, "/cta/a/f")
    await move(catalogue_db, ADMIN, "/cta/a/f", "/cta/b/g")
    after = await get_file(catalogue_db, "/cta/b/g")
    assert after["parent"] == "/cta/b" and after["name"] == "g" and after["guid"] == before["guid"]
    assert after["replicas"][0]["url"] == before["replicas"][0]["url"]
    with pytest.raises(NotFound):
        await get_file(catalogue_db, "/cta/a/f")


async def test_moving_a_directory_rewrites_every_descendant(catalogue_db: AsyncDatabase[Document]) -> None:
    await register_files(catalogue_db, ADMIN, [a_file(f"/cta/old/x/y/f{i}") for i in range(5)] + [a_file("/cta/oldie")])
    await move(catalogue_db, ADMIN, "/cta/old", "/cta/new")
    assert (await stat(catalogue_db, ADMIN, "/cta/new/x/y"))["parent"] == "/cta/new/x"
    assert (await get_file(catalogue_db, "/cta/new/x/y/f3"))["parent"] == "/cta/new/x/y"
    assert (await get_file(catalogue_db, "/cta/oldie"))["name"] == "oldie"  # a sibling sharing the prefix stays
    for gone in ("/cta/old", "/cta/old/x", "/cta/old/x/y/f3"):
        with pytest.raises(NotFound):
            await stat(catalogue_db, ADMIN, gone)
    listing = await list_directory(catalogue_db, ADMIN, "/cta/new/x/y")
    assert [e["name"] for e in listing["entries"]] == [f"f{i}" for i in range(5)]


async def test_move_refuses_an_existing_destination_and_a_move_into_itself(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/a/f"), a_file("/cta/b")])
    with pytest.raises(Conflict):
        await move(catalogue_db, ADMIN, "/cta/a", "/cta/b")
    with pytest.raises(InvalidInput, match="into itself"):
        await move(catalogue_db, ADMIN, "/cta/a", "/cta/a/sub")
    with pytest.raises(NotFound):
        await move(catalogue_db, ADMIN, "/cta/a", "/cta/missing/a")


async def test_remove_files_and_empty_directories_and_trees_for_admins_only(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await register_files(catalogue_db, ADMIN, [a_file("/cta/t/a/f"), a_file("/cta/t/b/g"),
                                               {**a_file("/cta/r"), "replicas": [{"se": "CERN-DISK"}]}])
    await chmod(catalogue_db, ADMIN, "/cta", 0o777)
    await chmod(catalogue_db, ADMIN, "/cta/t", 0o777)
    with pytest.raises(Conflict, match="not empty"):
        await remove(catalogue_db, ADMIN, "/cta/t")
    with pytest.raises(Conflict, match="replica"):
        await remove(catalogue_db, ADMIN, "/cta/r")
    with pytest.raises(Forbidden, match="admins"):
        await remove(catalogue_db, ALICE, "/cta/t", recursive=True)
    assert await remove(catalogue_db, ADMIN, "/cta/t/a/f") == 1
    assert await remove(catalogue_db, ADMIN, "/cta/t/a") == 1
    assert await remove(catalogue_db, ADMIN, "/cta/t", recursive=True) == 3
    with pytest.raises(NotFound):
        await stat(catalogue_db, ADMIN, "/cta/t/b/g")


async def test_chmod_and_chown_belong_to_the_owner_and_admins(catalogue_db: AsyncDatabase[Document]) -> None:
    await mkdir(catalogue_db, ADMIN, "/cta", mode=0o777)
    await mkdir(catalogue_db, ALICE, "/cta/alice")
    assert (await chmod(catalogue_db, ALICE, "/cta/alice", 0o700))["mode"] == 0o700
    with pytest.raises(Forbidden):
        await chmod(catalogue_db, ALICE, "/cta", 0o755)
    with pytest.raises(Forbidden, match="admin"):
        await chown(catalogue_db, ALICE, "/cta/alice", owner="bob")
    with pytest.raises(Forbidden, match="own groups"):
        await chown(catalogue_db, ALICE, "/cta/alice", group="km3net")
    changed = await chown(catalogue_db, ADMIN, "/cta/alice", owner="bob", group="km3net")
    assert (changed["owner"], changed["group"]) == ("bob", "km3net")
    assert (await stat(catalogue_db, ADMIN, "/cta/alice"))["owner"] == "bob"
