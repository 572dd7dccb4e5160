"""A registration refused after its insert (a chmod that denied its caller returned before its
files landed) takes back the directories it made on the way for them, if they are still its own
and empty, as a call checked after the chmod would have made none.

Before, they stayed behind, empty, owned by a caller the directory above no longer admits."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.namespace import chmod, mkdir
from catalogue.unmade_directories import take_back_made
from kernel.db import Document
from tests.fixtures.catalogue import ADMIN, ALICE

# About 2 rounds in 5 are refused (79 of 200 here) and before its fix 50 of 51 refusals left
# their directories: 25 rounds miss it with p < 0.01%.
ROUNDS = 25


async def test_directories_made_for_refused_files_are_taken_back(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    left = refused = 0
    for i in range(ROUNDS):
        directory = f"/cta/open{i}"
        await mkdir(db, ADMIN, directory, parents=True)
        await chmod(db, ADMIN, directory, 0o777)

        async def close(directory: str = directory) -> None:
            await asyncio.sleep(random.uniform(0.001, 0.008))
            await chmod(db, ADMIN, directory, 0o755)  # ALICE is neither owner nor in its group

        async def write(directory: str = directory) -> dict[str, Any]:
            await asyncio.sleep(random.uniform(0, 0.004))
            return await register_files(db, ALICE, [{"lfn": f"{directory}/sub/deeper/g", "size": 1,
                                                     "adler32": "00000001"}])

        outcome, _ = await asyncio.gather(write(), close())
        made = await db["directories"].find_one({"_id": f"{directory}/sub"}) is not None
        if outcome["failed"]:
            refused += 1
            left += made
        else:
            assert made and await db["directories"].find_one({"_id": f"{directory}/sub/deeper"}) is not None
    print(f"refused {refused}, directories left behind {left} of {ROUNDS}")
    assert left == 0, f"{left} of {refused} refused registrations left the directories they made behind"


async def test_a_directory_made_for_a_refused_file_stays_once_someone_else_uses_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    """Not empty any more, or not as its maker left it: kept."""
    db = catalogue_db
    await mkdir(db, ADMIN, "/cta/kept", parents=True)
    await chmod(db, ADMIN, "/cta/kept", 0o777)
    await register_files(db, ALICE, [{"lfn": "/cta/kept/a/f", "size": 1, "adler32": "00000001"}])
    await register_files(db, ALICE, [{"lfn": "/cta/kept/b/f", "size": 1, "adler32": "00000001"}])
    a = await db["directories"].find_one({"_id": "/cta/kept/a"})
    b = await db["directories"].find_one({"_id": "/cta/kept/b"})
    assert a is not None and b is not None
    await db["files"].delete_one({"_id": "/cta/kept/b/f"})
    await chmod(db, ALICE, "/cta/kept/b", 0o700)
    assert await take_back_made(db, "alice", ["/cta/kept/a"], a["modified"]) == []  # not empty
    assert await take_back_made(db, "alice", ["/cta/kept/b"], b["modified"]) == []  # changed since
