"""A move racing a chmod of its source's directory that takes the mover's write away: an entry
that arrives at its destination after the chmod returned is refused (403) and stays where it
was, as a move checked after the chmod is (moving an entry away removes it from its directory).

Before, the move judged the source's directory as it read it before writing the new record."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.moves import move
from catalogue.namespace import chmod, mkdir
from kernel.db import Document
from kernel.errors import Forbidden
from tests.fixtures.catalogue import ADMIN, ALICE

ROUNDS = 150


@pytest.mark.parametrize("kind", ["file", "directory"])
async def test_an_entry_moved_away_after_a_chmod_denying_its_mover_returned_is_refused(
        catalogue_db: AsyncDatabase[Document], kind: str) -> None:
    db = catalogue_db
    late = refused = 0
    collection = "files" if kind == "file" else "directories"
    for i in range(ROUNDS):
        source, target = f"/cta/a{i}", f"/cta/b{i}"
        for directory in (source, target):
            await mkdir(db, ADMIN, directory, parents=True)
            await chmod(db, ADMIN, directory, 0o777)
        if kind == "file":
            await register_files(db, ALICE, [{"lfn": f"{source}/e", "size": 1, "adler32": "00000001"}])
        else:
            await mkdir(db, ALICE, f"{source}/e")
        seen_after_chmod: list[bool] = []

        async def close(source: str = source, target: str = target, seen: list[bool] = seen_after_chmod) -> None:
            await asyncio.sleep(random.uniform(0.002, 0.016))  # the move reads and marks first
            await chmod(db, ADMIN, source, 0o755)  # ALICE is neither owner nor in its group
            seen.append(await db[collection].find_one({"_id": f"{target}/e"}) is not None)

        async def carry(source: str = source, target: str = target) -> Any:
            await asyncio.sleep(random.uniform(0, 0.004))
            return await move(db, ALICE, f"{source}/e", f"{target}/e")

        outcome, _ = await asyncio.gather(carry(), close(), return_exceptions=True)
        if isinstance(outcome, BaseException) and not isinstance(outcome, Forbidden):
            raise outcome
        refused += isinstance(outcome, Forbidden)
        arrived = await db[collection].find_one({"_id": f"{target}/e"}) is not None
        stayed = await db[collection].find_one({"_id": f"{source}/e"}) is not None
        assert arrived == (not isinstance(outcome, BaseException)) == (not stayed), outcome
        late += arrived and not seen_after_chmod[0]
    print(f"{kind}: refused {refused}, moved away after the chmod {late} of {ROUNDS}")
    assert late == 0, f"{late} of {ROUNDS} entries were moved away after the chmod that denied their mover"
