"""A file attached to a dataset while it is moved ends either attached at its LFN or moved, never
both: a dataset row naming an LFN its file left would later take in whatever file is registered
there. The move looks for dataset rows after its mark; the attach looks for the mark (and the
file) after its rows are in and takes them back out (`catalogue.directory_moves.leaving`).
Real calls against the real database, started together in varied orders (bounded: 40 pairs)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import dataset_contents, datasets
from catalogue.datasets import DidIn
from catalogue.moves import move
from catalogue.namespace import mkdir
from kernel.db import Document
from kernel.errors import Conflict
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.transfers import add_ses, disk_se, put_files

PAIRS = 40


async def _race(database: AsyncDatabase[Document], did: str, lfn: str, source: str, target: str,
                delays: tuple[float, float]) -> tuple[bool, bool]:
    """Attach lfn and move source (lfn or a directory above it) at once; (attached, moved)."""
    async def attach() -> bool:
        await asyncio.sleep(delays[0])
        done = await dataset_contents.attach_files(database, ADMIN, did, [lfn])
        return bool(done["successful"].get(lfn, {}).get("attached"))

    async def moved() -> bool:
        await asyncio.sleep(delays[1])
        try:
            await move(database, ADMIN, source, target)
        except Conflict:
            return False
        return True

    a, m = await asyncio.gather(attach(), moved())
    return a, m


async def test_an_attach_racing_a_move_leaves_no_row_at_a_left_lfn(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    disk = disk_se("RACE", tmp_path / "race")
    await add_ses(database, disk)
    files = [f"/vo/race/f{i}" for i in range(PAIRS // 2)] + [f"/vo/dirs/d{i}/f" for i in range(PAIRS // 2)]
    await put_files(database, [disk], files, size=16)
    await mkdir(database, ADMIN, "/vo/moved")
    await datasets.create_did(database, ADMIN, DidIn(did="vo:race"))
    pick = random.Random(17)
    outcomes = []
    for i, lfn in enumerate(files):
        source = lfn if i < PAIRS // 2 else lfn.rsplit("/", 1)[0]  # the file, or its directory
        delays = (pick.choice((0, 0.001, 0.003, 0.006)), pick.choice((0, 0.001, 0.003, 0.006)))
        outcomes.append(await _race(database, "vo:race", lfn, source, f"/vo/moved/m{i}", delays))

    rows = [row async for row in database["dataset_files"].find({"did": "vo:race"})]
    present = {doc["_id"] async for doc in database["files"].find({"_id": {"$in": [r["lfn"] for r in rows]}})}
    assert sorted(r["lfn"] for r in rows if r["lfn"] not in present) == []  # no row names a left LFN
    for lfn, (attached, moved) in zip(files, outcomes, strict=True):
        assert not (attached and moved), lfn
        assert attached == (lfn in {r["lfn"] for r in rows}), lfn
    counted = await database["datasets"].find_one({"_id": "vo:race"})
    assert counted is not None and (counted["files"], counted["bytes"]) == (len(rows), 16 * len(rows))
    assert any(a for a, _ in outcomes) and any(m for _, m in outcomes)  # both sides won some races
