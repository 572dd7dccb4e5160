"""Races on one task queue, run concurrently for many rounds: two pilots' pops of its last entry
racing a checker's enqueue of a new job never leave that job in the queue counted 0 (offered to
no pilot until the watchdog's mender, minutes later)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import TypeVar

from tests.fixtures.grid import Grid
from wms import task_queues
from wms.task_queues import QueueKey

ROUNDS = 300
KEY = QueueKey(sites=("SITE-A",), tags=(), cpu=1, memory_mb=1000, group="cta", priority=5)
T = TypeVar("T")


async def _later(work: Awaitable[T]) -> T:
    await asyncio.sleep(random.uniform(0, 0.004))
    return await work


async def test_a_pop_finding_the_queue_empty_never_uncounts_a_job_queued_meanwhile(grid: Grid) -> None:
    db = grid.db
    hidden = 0
    for i in range(ROUNDS):
        await task_queues.enqueue(db, KEY, [task_queues.entry(f"a{i}", 1)])
        await asyncio.gather(task_queues.pop(db, KEY.queue_id), _later(task_queues.pop(db, KEY.queue_id)),
                             _later(task_queues.enqueue(db, KEY, [task_queues.entry(f"b{i}", 1)])))
        [queue] = await task_queues.all_queues(db)
        entries = await db[task_queues.QUEUE_ENTRIES].find_one({"_id": KEY.queue_id})
        assert entries is not None
        hidden += bool(entries["entries"]) and queue["waiting"] < len(entries["entries"])
        drained = await task_queues.pop(db, KEY.queue_id)
        while drained is not None:  # (the next round starts empty)
            drained = await task_queues.pop(db, KEY.queue_id)
    assert hidden == 0
