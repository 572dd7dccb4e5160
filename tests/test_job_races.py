"""Races between two calls on one job, run concurrently for many rounds: a kill that lands while
the checker moves the job on ends it, whichever state the checker left it in, and leaves no entry
of it in its task queue."""

from __future__ import annotations

import asyncio
import random

from kernel.principal import Principal
from tests.fixtures.grid import Grid
from wms import checking, control, execution, jobs, matching, submission, task_queues
from wms.config import WmsSettings
from wms.description import JobDescription

ROUNDS = 150
QUEUE_ROUNDS = 30  # 13 of 80 left an entry before its fix: 30 rounds miss it with p < 0.5%
STALL_ROUNDS = 400  # the window is one round trip wide
ALICE = Principal(sub="alice", vo="local", groups=("cta",), scopes=frozenset({"jobs.read", "jobs.write"}))


async def test_a_kill_racing_the_checker_ends_the_job(grid: Grid, wms_config: WmsSettings) -> None:
    db = grid.db
    alive = 0
    for i in range(ROUNDS):
        [job_id] = await submission.submit(db, ALICE, [JobDescription.model_validate(
            {"name": f"k{i}", "executable": "/bin/true"})])
        read = await jobs.get_job(db, job_id)  # received, as the kill's caller read it

        async def kill(read: dict = read) -> None:  # type: ignore[type-arg]
            await asyncio.sleep(random.uniform(0, 0.004))
            await control.kill(db, read, "by request")

        await asyncio.gather(checking.check_batch(db, wms_config, "checker"), kill())
        alive += (await jobs.get_job(db, job_id))["state"] != "killed"
    assert alive == 0


async def test_a_kill_racing_the_checker_leaves_no_entry_in_the_task_queue(grid: Grid, wms_config: WmsSettings) -> None:
    # The pass queues its jobs one task queue after another: the last job of a batch spread over
    # eleven queues (one per priority) is pushed a few round trips after it was stored waiting,
    # where a kill's claim and `$pull` fit.
    db = grid.db
    stale = 0
    for i in range(QUEUE_ROUNDS):
        ids = await submission.submit(db, ALICE, [JobDescription.model_validate(
            {"name": f"q{i}-{p}", "executable": "/bin/true", "priority": p}) for p in range(11)])
        read = await jobs.get_job(db, ids[-1])

        async def kill(read: dict = read) -> None:  # type: ignore[type-arg]
            await asyncio.sleep(random.uniform(0, 0.03))
            await control.kill(db, read, "by request")

        await asyncio.gather(checking.check_batch(db, wms_config, "checker"), kill())
        assert (await jobs.get_job(db, ids[-1]))["state"] == "killed"
        stale += await db[task_queues.QUEUE_ENTRIES].count_documents({"entries": task_queues.entry(ids[-1], 1)})
    counted = sum(q["waiting"] for q in await task_queues.all_queues(db))
    entries = sum(len(q["entries"]) for q in await db[task_queues.QUEUE_ENTRIES].find({}).to_list())
    assert (stale, counted) == (0, entries)


async def test_a_kill_racing_the_watchdogs_stall_is_not_lost_to_the_reschedule(
    grid: Grid, wms_config: WmsSettings,
) -> None:
    db = grid.db
    run_again = 0
    for i in range(STALL_ROUNDS):
        [job_id] = await submission.submit(db, ALICE, [JobDescription.model_validate(
            {"name": f"s{i}", "executable": "/bin/true"})])
        await checking.check_batch(db, wms_config, "checker")
        matched = await matching.match(db, matching.PilotOffer(pilot=f"p{i}", site="SITE-A"))
        assert matched is not None and matched["_id"] == job_id
        await execution.start(db, job_id, 1, f"p{i}")
        read = await jobs.get_job(db, job_id)  # running; its pilot has gone silent

        async def kill(read: dict = read) -> None:  # type: ignore[type-arg]
            await asyncio.sleep(random.uniform(0, 0.0015))
            await control.kill(db, read, "by request")

        await asyncio.gather(control.declare_stalled(db, read, 5, 600.0), kill())
        after = await jobs.get_job(db, job_id)
        if after["state"] != "killed":
            run_again += 1
            await control.kill(db, after, "the next round's pilot must not get it")
    assert run_again == 0
