"""A registration naming the GUID of a file being moved, in the moment the move holds it as
`moving_guid` (its original gone, its copy not yet given the GUID back): the registration is
refused, and the moved file keeps its GUID (`catalogue.guid_holds`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.moves import move
from kernel.db import Document
from kernel.errors import Conflict
from tests.fixtures.catalogue import ADMIN

ROUNDS = 150


async def _later(call: Awaitable[Any], delay: float) -> Any:
    await asyncio.sleep(delay)
    return await call


def _file(lfn: str, guid: str) -> dict[str, Any]:
    return {"lfn": lfn, "size": 1, "adler32": "00000001", "guid": guid}


async def _check(db: AsyncDatabase[Document], attempt: int, guid: str, outcomes: list[Any], bad: list[Any]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, Conflict):
            bad.append((attempt, repr(outcome)))
    holders = await db["files"].find({"$or": [{"guid": guid}, {"moving_guid": guid}]},
                                     {"guid": 1, "moving_guid": 1}).to_list()
    if len(holders) != 1 or holders[0].get("guid") != guid:
        bad.append((attempt, holders))


async def test_a_registration_taking_a_moving_files_guid_is_refused_and_the_file_keeps_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    bad: list[Any] = []
    for attempt in range(ROUNDS):
        guid = str(uuid.uuid4())
        assert not (await register_files(db, ADMIN, [_file(f"/vo/g/a{attempt}", guid)]))["failed"]
        outcomes = await asyncio.gather(
            move(db, ADMIN, f"/vo/g/a{attempt}", f"/vo/g/b{attempt}"),
            _later(register_files(db, ADMIN, [_file(f"/vo/x/c{attempt}", guid)]), (attempt % 10) / 1000),
            return_exceptions=True)
        await _check(db, attempt, guid, outcomes, bad)
    assert not bad, (len(bad), bad[:5])


async def test_a_registration_taking_the_guid_of_a_file_its_directory_move_carries_is_refused(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    bad: list[Any] = []
    for attempt in range(ROUNDS):
        guid = str(uuid.uuid4())
        assert not (await register_files(db, ADMIN, [_file(f"/vo/h{attempt}/d/f", guid)]))["failed"]
        outcomes = await asyncio.gather(
            move(db, ADMIN, f"/vo/h{attempt}/d", f"/vo/h{attempt}/e"),
            _later(register_files(db, ADMIN, [_file(f"/vo/y/c{attempt}", guid)]), (attempt % 10) / 1000),
            return_exceptions=True)
        await _check(db, attempt, guid, outcomes, bad)
    assert not bad, (len(bad), bad[:5])
