"""A registration that gives its records up below a directory move, racing another registration
of the same files that takes its call over (`catalogue.usage.take_over_calls`): the records are
counted once, or not at all if given up (`cairn usage rebuild` finds no drift).

Not so yet (fix7 audit): 5-9 of 60 rounds drift. A take-over reading the call's records just
before the call gives them up counts records then deleted uncounted; marking what a take-over
counted (and taking those off at the give-up) is not enough, as the directory move carries the
count of such a record to its new place while the withdrawn record stays (5-6 of 60 rounds
still drifted with that change, the other way). `cairn usage rebuild` mends it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.usage import rebuild
from kernel.db import Document
from kernel.errors import Conflict, NotFound
from tests.fixtures.catalogue import ADMIN

ROUNDS = 60


async def _later(call: Awaitable[Any], delay: float) -> Any:
    await asyncio.sleep(delay)
    return await call


def _files(directory: str) -> list[dict[str, Any]]:
    return [{"lfn": f"{directory}/n{i}", "size": 100, "adler32": "00000001", "replicas": [{"se": "CERN-DISK"}]}
            for i in range(4)]


@pytest.mark.xfail(strict=True, reason="a give-up racing a take-over and a directory move still drifts (see module)")
async def test_registrations_racing_a_directory_move_and_each_other_count_each_record_once(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    bad = []
    for attempt in range(ROUNDS):
        directory = f"/vo/s/r{attempt}/d"
        await mkdir(db, ADMIN, directory, parents=True)
        delays = [(attempt % 4) / 1000, ((attempt // 4) % 4) / 1000, 0.0]
        outcomes = await asyncio.gather(
            _later(register_files(db, ADMIN, _files(directory)), delays[0]),
            _later(register_files(db, ADMIN, _files(directory)), delays[1]),
            _later(move(db, ADMIN, directory, f"/vo/s/r{attempt}/e"), delays[2]), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Conflict | NotFound):
                raise outcome
        report = await rebuild(db, fix=True)
        if report["drifted"]:
            bad.append((attempt, report["drift"]))
    assert not bad, (len(bad), bad[:3])
