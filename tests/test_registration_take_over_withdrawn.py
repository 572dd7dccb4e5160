"""A take-over of a register call counts none of the records that call withdrew (gave up below a
directory move, deleted uncounted): `cairn usage rebuild` finds no drift.

A registration's give-up waits for the move's batch under way to pass its records (up to
`directory_moves.PASS_WAIT`) before it deletes them and settles; a second registration of one
of its *kept* files waits `registration_settling.SETTLE_WAIT` for it to settle, then takes the
call over (`catalogue.usage.take_over_calls`). Before, the take-over counted every record of the
call, the withdrawn ones too, which the give-up then deleted uncounted: the moving directory's
ancestors kept them for good. A move slower than the settle wait is all it takes (a tree of
several batches on a loaded database); the test shortens the wait instead of growing the tree."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

import catalogue.registration_settling
from catalogue.files import register_files
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.usage import rebuild
from kernel.db import Document
from kernel.errors import Conflict, NotFound
from tests.fixtures.catalogue import ADMIN

ROUNDS = 20
TREE = 1200  # files in the moving directory: the move takes a while (two batches)


async def _later(call: Awaitable[Any], delay: float) -> Any:
    await asyncio.sleep(delay)
    return await call


def _file(lfn: str) -> dict[str, Any]:
    return {"lfn": lfn, "size": 100, "adler32": "00000001", "replicas": [{"se": "CERN-DISK"}]}


async def test_a_take_over_does_not_count_what_the_call_withdrew_below_a_directory_move(
        catalogue_db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue.registration_settling, "SETTLE_WAIT", 0.05)  # the move outlasts it
    db = catalogue_db
    await mkdir(db, ADMIN, "/vo/t/m0", parents=True)
    await mkdir(db, ADMIN, "/vo/t/kept")
    for start in range(0, TREE, 600):
        await register_files(db, ADMIN, [{"lfn": f"/vo/t/m0/t{i:05d}", "size": 1, "adler32": "00000001"}
                                         for i in range(start, min(TREE, start + 600))])
    bad, given_up, at = [], 0, 0
    for attempt in range(ROUNDS):
        kept = f"/vo/t/kept/f{attempt}"
        first = [_file(f"/vo/t/m{at}/g{attempt}"), _file(kept)]
        outcomes = await asyncio.gather(
            _later(register_files(db, ADMIN, first), (attempt % 5) / 1000),
            _later(register_files(db, ADMIN, [_file(kept)]), 0.03),  # meets the first's kept record
            move(db, ADMIN, f"/vo/t/m{at}", f"/vo/t/m{1 - at}"), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Conflict | NotFound):
                raise outcome
        if not isinstance(outcomes[2], BaseException):
            at = 1 - at
        given_up += not isinstance(outcomes[0], BaseException) and len(outcomes[0]["failed"]) == 1
        report = await rebuild(db, fix=True)
        if report["drifted"]:
            bad.append((attempt, sorted(report["drift"])))
    print(f"{given_up} of {ROUNDS} rounds gave a record up; {len(bad)} drifted")
    assert not bad, (len(bad), bad[:3])
