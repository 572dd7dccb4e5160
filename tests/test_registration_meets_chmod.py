"""A registration racing a chmod of its directory that takes the caller's write away: a file
whose record lands after the chmod returned is refused, as a registration checked after the
chmod is (POSIX checks and creates in one step; the catalogue reads the directory, then inserts).

Before, the registration judged the directory as it read it before its insert: 24-35 of 200
rounds wrote a file that a read right after the chmod returned had not seen, by a caller the
new mode denied; judging again at the directories it made on the way (its own) still let 93 of
200 through below them."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.namespace import chmod, mkdir
from kernel.db import Document
from kernel.errors import Forbidden
from tests.fixtures.catalogue import ADMIN, ALICE

# Before their fixes 24-35 of 200 files (then 93 of 200 below a directory the call made) and 75 of
# 200 directories landed after the chmod; the directories' fix taken out again on today's code,
# 1 and 8 of 20 did: 60 rounds, not 200, still miss either with p < 0.5% at 24/200 or 9/40.
ROUNDS = 60


async def test_a_file_written_after_a_chmod_denying_its_writer_returned_is_refused(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    late = refused = 0
    for i in range(ROUNDS):
        directory = f"/cta/open{i}"
        await mkdir(db, ADMIN, directory, parents=True)
        await chmod(db, ADMIN, directory, 0o777)
        seen_after_chmod: list[bool] = []

        async def close(directory: str = directory, seen: list[bool] = seen_after_chmod) -> None:
            await asyncio.sleep(random.uniform(0, 0.004))
            await chmod(db, ADMIN, directory, 0o755)  # ALICE is neither owner nor in its group
            seen.append(await db["files"].find_one({"_id": {"$in": [f"{directory}/f", f"{directory}/sub/g"]}})
                        is not None)

        async def write(directory: str = directory) -> dict[str, Any]:
            await asyncio.sleep(random.uniform(0, 0.006))
            return await register_files(db, ALICE, [{"lfn": f"{directory}/f", "size": 1, "adler32": "00000001"},
                                                    {"lfn": f"{directory}/sub/g", "size": 1, "adler32": "00000001"}])

        outcome, _ = await asyncio.gather(write(), close())
        exists = await db["files"].find_one({"_id": f"{directory}/f"}) is not None
        assert exists == (f"{directory}/f" in outcome["successful"]), outcome
        # the one below a directory made on the way is judged where the check judged it too
        below = await db["files"].find_one({"_id": f"{directory}/sub/g"}) is not None
        assert below == (f"{directory}/sub/g" in outcome["successful"]), outcome
        refused += bool(outcome["failed"])
        late += (exists or below) and not seen_after_chmod[0]
    print(f"refused {refused}, written after the chmod {late} of {ROUNDS}")
    assert late == 0, f"{late} of {ROUNDS} files were written after the chmod that denied their writer"


async def test_a_directory_made_after_a_chmod_denying_its_maker_returned_is_refused(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    late = 0
    for i in range(ROUNDS):
        directory = f"/cta/open{i}"
        await mkdir(db, ADMIN, directory, parents=True)
        await chmod(db, ADMIN, directory, 0o777)
        seen_after_chmod: list[bool] = []

        async def close(directory: str = directory, seen: list[bool] = seen_after_chmod) -> None:
            await asyncio.sleep(random.uniform(0, 0.004))
            await chmod(db, ADMIN, directory, 0o755)
            seen.append(await db["directories"].find_one({"_id": f"{directory}/d"}) is not None)

        async def make(directory: str = directory) -> Any:
            await asyncio.sleep(random.uniform(0, 0.004))
            return await mkdir(db, ALICE, f"{directory}/d/e", parents=True)

        outcome, _ = await asyncio.gather(make(), close(), return_exceptions=True)
        if isinstance(outcome, BaseException) and not isinstance(outcome, Forbidden):
            raise outcome
        exists = await db["directories"].find_one({"_id": f"{directory}/d"}) is not None
        assert exists == (not isinstance(outcome, BaseException)), outcome
        late += exists and not seen_after_chmod[0]
    assert late == 0, f"{late} of {ROUNDS} directories were made after the chmod that denied their maker"
