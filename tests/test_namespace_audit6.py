"""Regression tests of the sixth catalogue audit, namespace: an empty directory removed while an
entry is made in it (the entry was left without its directory: out of listings, and out of the
directory's modes, which no longer hid it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import DIRECTORIES
from catalogue.files import FILES, register_files
from catalogue.moves import move
from catalogue.namespace import mkdir, remove
from kernel.db import Document
from kernel.errors import CairnError
from tests.fixtures.catalogue import ADMIN, ALICE

ROUNDS = 300


async def _orphans_of_races(db: AsyncDatabase[Document], make: Callable[[str], Awaitable[object]]) -> list[str]:
    """Race `make(directory)` against the removal of that (empty) directory, ROUNDS times with
    staggered starts; the entries left below a directory that is gone."""
    await mkdir(db, ADMIN, "/cta", parents=True, mode=0o777)
    orphans = []
    for i in range(ROUNDS):
        directory = f"/cta/e{i}"
        await mkdir(db, ALICE, directory, mode=0o777)

        async def after(delay: float, call: Awaitable[object]) -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(CairnError):
                await call

        delay = (i % 15) * 0.001
        await asyncio.gather(after(delay * (i % 2), make(directory)),
                             after(delay * (1 - i % 2), remove(db, ALICE, directory)))
        if await db[DIRECTORIES].find_one({"_id": directory}) is None:
            below = {"_id": {"$gt": directory + "/", "$lt": directory + "0"}}
            orphans += [d["_id"] for c in (FILES, DIRECTORIES) for d in await db[c].find(below).to_list()]
    return orphans


async def test_a_file_registered_while_its_directory_is_removed_is_not_left_without_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    async def register(directory: str) -> None:
        await register_files(catalogue_db, ALICE, [{"lfn": f"{directory}/x", "size": 1, "adler32": "00000001"}])

    assert await _orphans_of_races(catalogue_db, register) == []


async def test_a_directory_made_while_its_parent_is_removed_is_not_left_without_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    async def make(directory: str) -> None:
        await mkdir(catalogue_db, ALICE, f"{directory}/sub")

    assert await _orphans_of_races(catalogue_db, make) == []


async def test_a_file_moved_into_a_directory_being_removed_is_not_left_without_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    await mkdir(catalogue_db, ADMIN, "/cta", mode=0o777)
    await register_files(catalogue_db, ALICE, [{"lfn": f"/cta/src/f{i}", "size": 1, "adler32": "00000001"}
                                               for i in range(ROUNDS)])

    async def move_in(directory: str) -> None:
        await move(catalogue_db, ALICE, f"/cta/src/f{directory.removeprefix('/cta/e')}", f"{directory}/x")

    assert await _orphans_of_races(catalogue_db, move_in) == []


async def test_a_directory_moved_into_a_directory_being_removed_is_not_left_without_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    await mkdir(catalogue_db, ADMIN, "/cta", mode=0o777)
    await register_files(catalogue_db, ALICE, [{"lfn": f"/cta/src/d{i}/f", "size": 1, "adler32": "00000001"}
                                               for i in range(ROUNDS)])

    async def move_in(directory: str) -> None:
        await move(catalogue_db, ALICE, f"/cta/src/d{directory.removeprefix('/cta/e')}", f"{directory}/x")

    assert await _orphans_of_races(catalogue_db, move_in) == []
