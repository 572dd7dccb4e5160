"""Where a server killed between its record writes and its usage count still leaves the counters
off after the sweep: a file removal (records deleted, not yet taken off). Known, left to `cairn
usage rebuild`, and marked xfail (strict) here so that closing it shows."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import FILES
from catalogue.files import register_files, remove_files
from catalogue.usage import rebuild
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.usage_cuts import Killed, killed_at_first_count, next_worker_sweeps

LFNS = [f"/vo/open/f{i}" for i in range(3)]


async def _registered(db: AsyncDatabase[Document]) -> None:
    outcome = await register_files(db, ADMIN, [{"lfn": lfn, "size": 100, "adler32": "00000001",
                                               "replicas": [{"se": "CERN-DISK"}]} for lfn in LFNS])
    assert sorted(outcome["successful"]) == LFNS


@pytest.mark.xfail(strict=True, reason="a removal's count is not noted before its delete: the sweep cannot redo it")
async def test_files_removed_by_a_server_killed_before_counting_them_off_are_counted_off_by_the_sweep(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    await _registered(catalogue_db)
    with killed_at_first_count(), pytest.raises(Killed):
        await remove_files(catalogue_db, ADMIN, LFNS, force=True)
    assert await catalogue_db[FILES].count_documents({}) == 0
    await next_worker_sweeps(catalogue_db, settings)
    report = await rebuild(catalogue_db, fix=False)
    assert report["drifted"] == 0, report["drift"]

