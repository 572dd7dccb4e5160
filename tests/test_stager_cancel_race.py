"""A cancel racing a second stager's ask under the recall id the first stager noted (it died
between noting the id and asking): the cancel's release may reach the tape system first, finding
nothing to release, and the ask then makes the recall, pinned for its lifetime with nobody to
release it. The stager now looks, after its ask, whether the request was cancelled meanwhile, and
then releases what it asked itself."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import list_storage_elements
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.transfers import add_ses, fast_settings, put_files, tape_se
from transfers import cancellation, queueing, recalls
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.endpoints import tape_endpoint
from transfers.stager import Stager

# Not cut: before its fix 11 and 15 of 40 rounds left a pin, but with the fix taken out again on
# today's code only 1 and 3 of 25 did.
ROUNDS = 40
PIN_S = 600


def _live_pins(cache: Path) -> int:
    return sum(1 for p in (cache / "pins").glob("*.json")
               for expires in json.loads(p.read_text())["pins"].values() if expires > time.time())


async def _cancel_once_taken(db: AsyncDatabase[Document], rid: str, taker: Stager, releaser: Stager) -> None:
    """Cancel the request once the second stager took it over (between its claim and its ask),
    and release its pin at once, as a stager's next cycle does."""
    async with asyncio.timeout(10):
        while True:
            if await db[rq.REQUESTS].count_documents({"_id": rid, "lease_owner": taker.worker}):
                break
            await asyncio.sleep(0)
    await cancellation.cancel(db, {"_id": rid})
    await releaser.run_once()


async def test_a_cancel_racing_a_second_stagers_ask_leaves_no_pin(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await add_ses(database, tape_se("TAPE", tmp_path / "t", stage_delay_s=0.05))
    [tape] = [se for se in await list_storage_elements(database) if se.name == "TAPE"]
    fast = fast_settings(settings, lease_s=5.0, pin_lifetime_s=PIN_S)
    second, releaser = Stager(fast, database), Stager(fast, database)
    lfns = [f"/vo/raw/f{i}" for i in range(ROUNDS)]
    await put_files(database, [tape], lfns, size=10)
    for i, lfn in enumerate(lfns):
        rid = (await queueing.submit(database, "stage", [{"lfn": lfn, "dest_se": "TAPE"}],
                                     requester="t"))["successful"][lfn]
        # The first stager claims it and notes its recall's id, then dies before asking.
        [claimed] = await rc.claim_many(database, "dead", kinds=["stage"], lease_s=0.05, limit=1)
        assert claimed["_id"] == rid
        _, url = tape_endpoint(tape, lfn, credentials={}, registered_url=None)
        assert await recalls.note_recall(database, rid, "dead", "active",
                                         {"se": "TAPE", "path": lfn, "url": url, "request_id": f"noted{i}"})
        await asyncio.sleep(0.06)  # its lease runs out
        await asyncio.gather(second.run_once(), _cancel_once_taken(database, rid, second, releaser))
    await asyncio.sleep(0.3)  # every recall asked is staged (or released) by now
    await Stager(fast, database).run_once()  # any release still asked is carried out
    await asyncio.sleep(0.1)
    assert _live_pins(tmp_path / "t" / "cache") == 0  # before: 11 and 15 of 40, pinned for PIN_S
