"""A registration that meets a file another registration just inserted answers for it only once
that registration has settled: if it gave the file up (its replica's path is held, it is below a
move), the file is not reported registered.

Before, registration B found registration A's record (duplicate key), answered `successful`
(`created: false`) and took A's call over, while A then gave the record up and deleted it: B's
caller was told of a file that did not exist. A replica added to such a file (`/replicas/add`)
was answered added, and counted on its SE, while the record went uncounted."""

from __future__ import annotations

import asyncio
import random
import zlib
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files, remove_files
from catalogue.moved_paths import HELD
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.registration_settling import GIVEN_UP
from catalogue.replicas import add_replicas
from catalogue.usage import rebuild
from kernel.db import Document
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.transfers import add_ses, disk_se, put_files

ROUNDS = 150
DATA = b"the same file"
ROW = {"lfn": "/vo/x/f", "size": len(DATA), "adler32": f"{zlib.adler32(DATA):08x}"}


async def test_a_file_the_first_registration_gave_up_is_not_reported_registered_by_the_second(
        database: AsyncDatabase[Document], tmp_path: Path) -> None:
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    await put_files(database, [a], ["/vo/x/f"])
    await mkdir(database, ADMIN, "/vo/y")
    await move(database, ADMIN, "/vo/x/f", "/vo/y/f")  # /vo/x/f's path on A is the moved file's
    told_wrong = raced = refused = 0
    for _ in range(ROUNDS):
        given_up, other = await asyncio.gather(
            register_files(database, ADMIN, [{**ROW, "replicas": [{"se": "A"}]}]),  # refused: HELD
            register_files(database, ADMIN, [ROW]))
        assert HELD in given_up["failed"].get("/vo/x/f", ""), given_up
        exists = await database["files"].find_one({"_id": "/vo/x/f"}) is not None
        if "/vo/x/f" in other["successful"]:
            raced += not other["successful"]["/vo/x/f"]["created"]
            told_wrong += not exists
        refused += GIVEN_UP in other["failed"].get("/vo/x/f", "")
        if exists:
            await remove_files(database, ADMIN, ["/vo/x/f"])
    print(f"raced {raced}, told to try again {refused}, told wrong {told_wrong} of {ROUNDS}")
    assert told_wrong == 0, f"{told_wrong} of {ROUNDS} rounds answered successful for a file given up ({raced} raced)"
    # nor did the second take the first's call over and count a record deleted uncounted
    assert (await rebuild(database, fix=False))["drifted"] == 0


async def _add_soon(database: AsyncDatabase[Document]) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0, 0.004))
    return await add_replicas(database, [{"lfn": "/vo/x/f", "se": "B"}])


async def test_a_replica_added_to_a_file_its_registration_gave_up_is_not_reported_added(
        database: AsyncDatabase[Document], tmp_path: Path) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a], ["/vo/x/f"])
    await mkdir(database, ADMIN, "/vo/y")
    await move(database, ADMIN, "/vo/x/f", "/vo/y/f")  # /vo/x/f's path on A is the moved file's
    told_wrong = added = 0
    for _ in range(ROUNDS):
        given_up, other = await asyncio.gather(
            register_files(database, ADMIN, [{**ROW, "replicas": [{"se": "A"}]}]),  # refused: HELD
            _add_soon(database))
        assert HELD in given_up["failed"].get("/vo/x/f", ""), given_up
        exists = await database["files"].find_one({"_id": "/vo/x/f"}) is not None
        added += "/vo/x/f" in other["successful"]
        told_wrong += "/vo/x/f" in other["successful"] and not exists
        if exists:
            await remove_files(database, ADMIN, ["/vo/x/f"], force=True)
            await database["moved_paths"].delete_many({"removal_hold": True})  # no bytes there to wait for
    print(f"added {added}, told wrong {told_wrong} of {ROUNDS}")
    assert told_wrong == 0, f"{told_wrong} of {ROUNDS} rounds answered a replica added to a file given up"
    assert (await rebuild(database, fix=False))["drifted"] == 0


async def _remove_soon(database: AsyncDatabase[Document], lfn: str) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0, 0.004))
    return await remove_files(database, ADMIN, [lfn], force=True)


async def test_a_removal_racing_a_registration_that_gives_files_up_keeps_usage_exact(
        database: AsyncDatabase[Document], tmp_path: Path) -> None:
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(database, a, b)
    await put_files(database, [a], ["/vo/x/f"])
    await mkdir(database, ADMIN, "/vo/y")
    await move(database, ADMIN, "/vo/x/f", "/vo/y/f")  # /vo/x/f's path on A is the moved file's
    kept = {"lfn": "/vo/x/g", "size": len(DATA), "adler32": ROW["adler32"], "replicas": [{"se": "B"}]}
    drifted = 0
    for _ in range(ROUNDS // 3):
        await asyncio.gather(register_files(database, ADMIN, [{**ROW, "replicas": [{"se": "A"}]}, kept]),
                             _remove_soon(database, "/vo/x/g"))
        await remove_files(database, ADMIN, ["/vo/x/g"], force=True)
        await database["moved_paths"].delete_many({"removal_hold": True})  # no bytes there to wait for
        drifted += bool((await rebuild(database, fix=True))["drifted"])
    assert drifted == 0, f"{drifted} of {ROUNDS // 3} rounds left usage drifted"
