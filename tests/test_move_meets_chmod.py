"""A move racing a chmod that takes the mover's write away, of its destination's directory or of
its source's (moving an entry away removes it from its directory): an entry that arrives at its
destination after the chmod returned is refused (403) and stays where it was, as a move checked
after the chmod is.

Before, the move judged both directories as it read them before writing the new record."""

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

# Before its fixes 137-141 of 150 moves into a chmodded destination and 39-59 of 150 out of a
# chmodded source landed late: at the lowest rate (39/150) 25 rounds miss it with p < 0.1%.
ROUNDS = 25
# When the chmod starts, per directory chmodded: a source's is taken away after the move's
# reads and marks (before them, the move is refused by its first check, not raced).
CHMOD_DELAY = {"destination": (0, 0.004), "source": (0.002, 0.016)}


@pytest.mark.parametrize("side", ["destination", "source"])
@pytest.mark.parametrize("kind", ["file", "directory"])
async def test_an_entry_moved_after_a_chmod_denying_its_mover_returned_is_refused(
        catalogue_db: AsyncDatabase[Document], kind: str, side: str) -> None:
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
        denied = target if side == "destination" else source

        async def close(denied: str = denied, target: str = target, seen: list[bool] = seen_after_chmod) -> None:
            await asyncio.sleep(random.uniform(*CHMOD_DELAY[side]))
            await chmod(db, ADMIN, denied, 0o755)  # ALICE is neither owner nor in its group
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
    print(f"{kind}, {side}: refused {refused}, moved after the chmod {late} of {ROUNDS}")
    assert late == 0, f"{late} of {ROUNDS} entries were moved after the chmod of the {side} that denied their mover"
