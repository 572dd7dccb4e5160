"""DID counts that a call cut short cannot leave off: each attach, detach or refresh claims the
DID while it changes the DID's rows and counts, and the transfer workers' sweep recounts a DID
whose call died holding its claim.

A dataset's `files` and `bytes` (a container's `children`) and its rows are two collections, and
every call writes them apart (`catalogue.dataset_contents`: an attach charges, then inserts; a
detach deletes, then gives back; `catalogue.dataset_refresh` sets the counts after its rows). A
call cut short between (its server killed, the database gone: 503) left the DID counting rows it
did not hold, or not counting rows it held, until an administrator ran `cairn dataset
rebuild-counts`; a retry did not mend it. Now:
1. `counting(db, did)`, before a call's first write: its claim in `dataset_count_claims` (the
   DID, `at`), then `count_calls` of the DID bumped by one;
2. its writes, the claim's `at` renewed every RENEW_S while they run;
3. on success the claim goes; a call that raised leaves it (the sweep recounts rather than trust
   a call's half-done compensations).
`dataset_recount.settle_stale` (the transfer workers' sweep) takes the claims not renewed for
`usage_settle_after_s` (at least LIVE_S), and for each of their DIDs with no live claim reads the
DID's counts and `count_calls`, recounts its rows, and sets the counts where neither moved
meanwhile (a call that began since bumped `count_calls` first); then those claims go.

What is left: a call whose renewals stopped for LIVE_S (its event loop held up, a clock skew of
that much between its server and the worker) may be recounted while it runs; `cairn dataset
rebuild-counts` mends what that leaves. Cost: three writes per call (claim, bump, drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.datasets import COUNT_CALLS as CALLS
from catalogue.datasets import DATASETS
from catalogue.directories import now
from kernel.db import Document, IndexSpec, database_errors

CLAIMS = "dataset_count_claims"
RENEW_S = 2.0  # a live call renews its claim this often
LIVE_S = 10.0  # a claim renewed within this long is a live call's, whatever the sweep's wait

INDEXES = [
    # dataset_recount.settle_stale: claims.find({at: {$lt: cutoff}}).sort(at) under INDEX_ORDER
    IndexSpec(CLAIMS, [("at", 1)], name="dataset_count_claims_by_at", index_order=True),
    # a DID's live claims: claims.find_one({did: d, at: {$gte: cutoff}}) under INDEX_ORDER
    IndexSpec(CLAIMS, [("did", 1), ("at", 1)], name="dataset_count_claims_by_did", index_order=True),
]


@contextlib.asynccontextmanager
async def counting(db: AsyncDatabase[Document], did: str) -> AsyncIterator[None]:
    """Hold a claim on `did` while the block changes its rows and counts (module docstring)."""
    token = uuid.uuid4().hex
    with database_errors():
        await db[CLAIMS].insert_one({"_id": token, "did": did, "at": now()})
        await db[DATASETS].update_one({"_id": did}, {"$inc": {CALLS: 1}})
    renewals = asyncio.create_task(_renew(db, token))
    try:
        yield
    finally:
        renewals.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewals
    with database_errors():  # only once the block succeeded: a call that raised leaves its claim
        await db[CLAIMS].delete_one({"_id": token})


async def _renew(db: AsyncDatabase[Document], token: str) -> None:
    while True:
        await asyncio.sleep(RENEW_S)
        with contextlib.suppress(Exception):  # the database gone: the call's own writes fail too
            await db[CLAIMS].update_one({"_id": token}, {"$set": {"at": now()}})
