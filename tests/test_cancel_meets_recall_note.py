"""A cancel of a stage request meeting the stager as it notes the request's recall: the cancel
looked first for requests with a recall noted (to ask their release), then for those without;
a recall noted between its two looks left the request matched by neither, and the cancel
answered 0 while the request went on staging. The cancel now looks for those without a recall
first: one whose recall is noted after that look is found by the second."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import add_ses, fast_settings, put_files, tape_se
from transfers import cancellation, queueing
from transfers import requests as rq
from transfers.stager import Stager

ROUNDS = 60


async def _cancel_once_claimed(db: AsyncDatabase[Document], rid: str, stager: Stager) -> int:
    async with asyncio.timeout(10):
        while True:
            if await db[rq.REQUESTS].count_documents({"_id": rid, "lease_owner": stager.worker}):
                break
            await asyncio.sleep(0)
    return await cancellation.cancel(db, {"_id": rid})


async def test_a_cancel_meeting_the_stagers_recall_note_cancels_the_request(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=30)
    await add_ses(database, tape)
    stager = Stager(fast_settings(settings), database)
    lfns = [f"/vo/raw/c{i}" for i in range(ROUNDS)]
    await put_files(database, [tape], lfns, size=10)
    missed = 0
    for lfn in lfns:
        rid = (await queueing.submit(database, "stage", [{"lfn": lfn, "dest_se": "TAPE"}],
                                     requester="t"))["successful"][lfn]
        _, cancelled = await asyncio.gather(stager.run_once(), _cancel_once_claimed(database, rid, stager))
        doc = await rq.get_request(database, rid)
        assert doc is not None
        missed += cancelled == 0 or doc["state"] != "cancelled"
    assert missed == 0  # before: 2, 2 and 5 of 60
