"""The request queue: dedup on submit, exclusive claims under leases, guarded completion."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, ensure_indexes
from kernel.errors import InvalidInput
from transfers import cancellation, queueing, request_reads
from transfers import request_claims as rc
from transfers import requests as rq
from transfers.failures import TIMEOUT, Failure, retry_delay_s


async def queue(database: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    await ensure_indexes(database, rq.INDEXES)
    return database


async def test_submitting_the_same_transfer_twice_reuses_the_open_request(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    first = await queueing.submit_transfers(db, [{"lfn": "/vo/a", "dest_se": "B"}], requester="user:alice")
    second = await queueing.submit_transfers(db, [{"lfn": "/vo/a", "dest_se": "B"}, {"lfn": "/vo/b", "dest_se": "B"}],
                                             requester="user:bob")
    assert second["successful"]["/vo/a"] == first["successful"]["/vo/a"]
    assert await db[rq.REQUESTS].count_documents({}) == 2


async def test_bad_items_fail_alone(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    result = await queueing.submit_transfers(db, [{"lfn": "relative", "dest_se": "B"}, {"lfn": "/vo/x"},
                                                  {"lfn": "/vo/ok", "dest_se": "B"}], requester="user:alice")
    assert set(result["failed"]) == {"relative", "/vo/x"}
    assert list(result["successful"]) == ["/vo/ok"]


async def test_concurrent_claims_never_hand_out_a_request_twice(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    await queueing.submit_transfers(db, [{"lfn": f"/vo/f{i}", "dest_se": "B"} for i in range(20)], requester="t")

    async def worker(name: str) -> list[str]:
        got = []
        while (doc := await rc.claim(db, name, kinds=["transfer"], lease_s=60)) is not None:
            got.append(doc["_id"])
        return got

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    claimed = [rid for ids in results for rid in ids]
    assert len(claimed) == 20
    assert len(set(claimed)) == 20


async def test_concurrent_batch_claims_never_hand_out_a_request_twice(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    await queueing.submit_transfers(db, [{"lfn": f"/vo/f{i:02d}", "dest_se": "B"} for i in range(40)], requester="t")

    async def worker(name: str) -> list[Document]:
        got: list[Document] = []
        while batch := await rc.claim_many(db, name, kinds=["transfer"], lease_s=60, limit=6):
            got += batch
        return got

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    claimed = [doc for docs in results for doc in docs]
    assert sorted(doc["lfn"] for doc in claimed) == [f"/vo/f{i:02d}" for i in range(40)]
    assert all(doc["state"] == "active" and doc["attempts"] == 1 for doc in claimed)
    for name, docs in zip((f"w{i}" for i in range(4)), results, strict=True):
        assert {doc["lease_owner"] for doc in docs} <= {name}


async def test_a_batch_claim_takes_the_best_first_and_expired_leases_too(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    await queueing.submit_transfers(db, [{"lfn": "/vo/low", "dest_se": "B"}], requester="t", priority=1)
    await queueing.submit_transfers(db, [{"lfn": "/vo/high", "dest_se": "B"}], requester="t", priority=5)
    assert [d["lfn"] for d in await rc.claim_many(db, "dead", kinds=["transfer"], lease_s=60, limit=1)] == ["/vo/high"]
    await db[rq.REQUESTS].update_many({}, {"$set": {"lease_expires": rq.now() - dt.timedelta(seconds=1)}})
    taken = await rc.claim_many(db, "w", kinds=["transfer"], lease_s=60, limit=5)
    assert [(d["lfn"], d["attempts"]) for d in taken] == [("/vo/high", 2), ("/vo/low", 1)]


async def test_a_batch_claim_takes_expired_leases_then_due_requests_of_its_kind_best_first(
    database: AsyncDatabase[Document],
) -> None:
    """The requests a dead worker held come first (they were at the head of the queue when it took
    them), then queued and due ones by priority and age; ended ones, other kinds and requests not
    due yet stay where they are, however many the history holds."""
    db = await queue(database)
    await queueing.submit_transfers(db, [{"lfn": "/vo/dead", "dest_se": "B"}], requester="t", priority=0)
    assert len(await rc.claim_many(db, "dead", kinds=["transfer"], lease_s=60, limit=5)) == 1
    await db[rq.REQUESTS].update_many({}, {"$set": {"lease_expires": rq.now() - dt.timedelta(seconds=1)}})
    done = await queueing.submit_transfers(db, [{"lfn": f"/vo/done{i}", "dest_se": "B"} for i in range(30)],
                                           requester="t", priority=9)
    await db[rq.REQUESTS].update_many({"_id": {"$in": list(done["successful"].values())}},
                                      {"$set": {"state": "done"}, "$unset": {"active_key": ""}})
    for lfn, priority in (("/vo/old3", 3), ("/vo/new3", 3), ("/vo/p9", 9), ("/vo/p1", 1), ("/vo/later", 9)):
        await queueing.submit_transfers(db, [{"lfn": lfn, "dest_se": "B"}], requester="t", priority=priority)
    await db[rq.REQUESTS].update_one({"lfn": "/vo/later"}, {"$set": {"not_before": rq.now() + dt.timedelta(hours=1)}})
    await queueing.submit(db, "delete", [{"lfn": "/vo/gone"}], requester="t", priority=9)
    first = await rc.claim_many(db, "w", kinds=["transfer"], lease_s=60, limit=3)
    assert [d["lfn"] for d in first] == ["/vo/dead", "/vo/p9", "/vo/old3"]
    rest = await rc.claim_many(db, "w", kinds=["transfer"], lease_s=60, limit=10)
    assert [d["lfn"] for d in rest] == ["/vo/new3", "/vo/p1"]
    assert [d["lfn"] for d in await rc.claim_many(db, "w", kinds=["delete", "stage"], lease_s=60, limit=10)] == \
        ["/vo/gone"]


async def test_a_priority_outside_the_queue_s_digits_is_refused(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    for priority in (-1, 10, 3.0, True, "3"):
        with pytest.raises(InvalidInput, match="priority"):
            await queueing.submit_transfers(db, [{"lfn": "/vo/f", "dest_se": "B"}], requester="t",
                                            priority=priority)  # type: ignore[arg-type]
    assert await db[rq.REQUESTS].count_documents({}) == 0


async def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_complete(
    database: AsyncDatabase[Document],
) -> None:
    db = await queue(database)
    await queueing.submit_transfers(db, [{"lfn": "/vo/a", "dest_se": "B"}], requester="t")
    first = await rc.claim(db, "crashed", kinds=["transfer"], lease_s=60)
    assert first is not None
    assert await rc.claim(db, "other", kinds=["transfer"], lease_s=60) is None
    await db[rq.REQUESTS].update_one({"_id": first["_id"]},
                                     {"$set": {"lease_expires": rq.now() - dt.timedelta(seconds=1)}})
    taken = await rc.claim(db, "other", kinds=["transfer"], lease_s=60)
    assert taken is not None and taken["_id"] == first["_id"] and taken["attempts"] == 2
    assert not await rq.complete(db, first["_id"], "crashed", {})
    assert await rq.complete(db, first["_id"], "other", {"bytes": 1})
    assert not await rq.complete(db, first["_id"], "other", {"bytes": 1})
    done = await rq.get_request(db, first["_id"])
    assert done is not None and done["state"] == "done" and "active_key" not in done


async def test_retry_later_hides_the_request_until_it_is_due(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    await queueing.submit_transfers(db, [{"lfn": "/vo/a", "dest_se": "B"}], requester="t")
    doc = await rc.claim(db, "w", kinds=["transfer"], lease_s=60)
    assert doc is not None
    assert await rq.retry_later(db, doc["_id"], "w", "timeout", delay_s=3600)
    assert await rc.claim(db, "w", kinds=["transfer"], lease_s=60) is None
    counts = await request_reads.progress(db, {"requester": "t"})
    assert counts["queued"] == 1 and counts["total"] == 1


async def test_cancel_closes_open_requests_and_frees_the_key(database: AsyncDatabase[Document]) -> None:
    db = await queue(database)
    first = await queueing.submit_transfers(db, [{"lfn": "/vo/a", "dest_se": "B"}], requester="t")
    assert await cancellation.cancel(db, {"requester": "t"}) == 1
    again = await queueing.submit_transfers(db, [{"lfn": "/vo/a", "dest_se": "B"}], requester="t")
    assert again["successful"]["/vo/a"] != first["successful"]["/vo/a"]


async def test_fail_or_retry_backs_off_until_the_attempts_run_out_then_fails(
    database: AsyncDatabase[Document],
) -> None:
    db = await queue(database)
    await queueing.submit(db, "transfer", [{"lfn": "/vo/a", "dest_se": "B"}], requester="t", max_attempts=2)
    slow = Failure(TIMEOUT, "timed out", permanent=False)
    first = await rc.claim(db, "w", kinds=["transfer"], lease_s=60)
    assert first is not None and first["attempts"] == 1
    assert not await rq.fail_or_retry(db, first, "w", slow, base_s=0.05, cap_s=0.05)
    queued = await rq.get_request(db, first["_id"])
    assert queued is not None and (queued["state"], queued["error_class"]) == ("queued", TIMEOUT)
    assert queued["not_before"] > rq.now() - dt.timedelta(seconds=1)
    await asyncio.sleep(0.1)
    second = await rc.claim(db, "w", kinds=["transfer"], lease_s=60)
    assert second is not None and second["attempts"] == 2
    assert await rq.fail_or_retry(db, second, "w", slow, base_s=0.05, cap_s=0.05)
    failed = await rq.get_request(db, first["_id"])
    assert failed is not None and failed["state"] == "failed"
    assert failed["last_error"] == "gave up after 2 attempts: timed out"


def test_the_retry_delay_doubles_up_to_its_cap_and_a_permanent_failure_is_not_retried() -> None:
    slow = Failure(TIMEOUT, "timed out", permanent=False)
    assert [retry_delay_s(slow, n, 10, base_s=1, cap_s=5) for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 5, None]
    assert retry_delay_s(Failure(TIMEOUT, "no", permanent=True), 1, 10, base_s=1, cap_s=5) is None


async def test_claim_many_shares_nothing_between_workers_racing_for_the_queue(
    database: AsyncDatabase[Document],
) -> None:
    db = await queue(database)
    await queueing.submit_transfers(db, [{"lfn": f"/vo/r{i}", "dest_se": "B"} for i in range(40)], requester="t")
    batches = await asyncio.gather(*(rc.claim_many(db, f"w{n}", kinds=["transfer"], lease_s=60, limit=15)
                                     for n in range(4)))
    ids = [doc["_id"] for batch in batches for doc in batch]
    assert len(ids) == len(set(ids)) >= 15  # a request another worker took meanwhile is skipped, never shared
    stored = {doc["_id"]: doc["lease_owner"] async for doc in db[rq.REQUESTS].find({"state": "active"})}
    assert stored == {doc["_id"]: f"w{n}" for n, batch in enumerate(batches) for doc in batch}
