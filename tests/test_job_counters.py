"""The job layer's counters (a task queue's `waiting`, a group's `running`) after a call cut short
between the write it counts and the counter's own: found by `cairn job rebuild-counters` /
`POST /job-counters/rebuild` and fixed, and mended by the job watchdog on its own once they stay
drifted. Calls are cut short by a real outage: the database behind a TCP gate that closes as
soon as the database answered a given command (`tests.fixtures.tcp_gate.cut_short`)."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import cli_json, run_cli
from tests.fixtures.grid import Grid, check_all
from tests.fixtures.tcp_gate import TcpGate, cut_short
from wms import checking, counter_recount, job_reads, jobs, matching, task_queues
from wms.config import WmsSettings
from wms.daemons import JobWatchdog

USER = ("jobs.read", "jobs.write")


async def submit(api: RunningApi, count: int = 1) -> list[str]:
    async with api.client(api.token(sub="alice", groups=("cta",), scopes=USER)) as alice:
        return await alice.submit_jobs([{"executable": "/bin/true"} for _ in range(count)])


async def match(api: RunningApi) -> dict[str, Any] | None:
    async with api.client(api.token(sub="pilot", scopes=("jobs.pilot",))) as pilot:
        return await pilot.match_job(pilot="p", site="SITE-A")


async def counters(db: AsyncDatabase[Document]) -> tuple[list[int], int]:
    """Every task queue's `waiting`, and group cta's `running`."""
    queues = await task_queues.all_queues(db)
    return [q["waiting"] for q in queues], (await task_queues.group_usage(db, ["cta"]))["cta"]["running"]


async def test_a_match_cut_short_is_found_and_fixed_by_cairn_job_rebuild_counters(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, settings: Settings, db_gate: TcpGate, admin: Client,
) -> None:
    await submit(api, 2)
    await check_all(grid.db, wms_config)
    # The job moved to its pilot; the group's count of jobs at pilots never heard of it.
    offer = matching.PilotOffer(pilot="p", site="SITE-A")
    await cut_short(db_gate, settings.database, "findAndModify", jobs.JOBS, lambda db: matching.match(db, offer))
    assert await job_reads.count_by_state(grid.db) == {"matched": 1, "waiting": 1}
    assert await counters(grid.db) == ([1], 0)

    report = await admin.rebuild_job_counters(fix=False)
    assert (report["checked"], report["drifted"], report["fixed"]) == (2, 1, False)
    assert report["drift"] == {"running:cta": {"vo": "local", "stored": None, "recounted": 1}}  # never counted
    assert await counters(grid.db) == ([1], 0)  # a dry run changes nothing

    fixed = await run_cli(api.url, api.admin_token, "job", "rebuild-counters")
    assert fixed.returncode == 0 and "1 of 2 drifted (fixed)" in fixed.stdout, fixed.stderr
    assert await counters(grid.db) == ([1], 1)
    again = await cli_json(api.url, api.admin_token, "job", "rebuild-counters", "--dry-run")
    assert isinstance(again, dict) and (again["drifted"], again["moved"]) == (0, [])

    # The next job's pilot and both ends count as they should from there on.
    assert await match(api) is not None
    assert await counters(grid.db) == ([0], 2)


async def test_a_count_below_its_queue_never_goes_negative_and_strands_the_next_job(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, settings: Settings, db_gate: TcpGate,
) -> None:
    config = wms_config.model_copy(update={"unqueued_repair_s": 0.1, "counter_mend_s": 3600})
    watchdog = JobWatchdog(grid.db, config)  # its own mend a long way off: not what this shows
    [first] = await submit(api)
    # The checker's enqueue is cut after the job's entry went into its queue: no definition, no
    # count. The watchdog's repair queues the job again (two entries, a count of one).
    await cut_short(db_gate, settings.database, "update", task_queues.QUEUE_ENTRIES,
                    lambda db: checking.check_batch(db, config, "checker"))
    await asyncio.sleep(0.2)
    assert await watchdog.run_once() >= 1
    assert await counters(grid.db) == ([1], 0)
    assert (await match(api) or {}).get("id") == first
    [second] = await submit(api)
    await check_all(grid.db, wms_config)
    # The leftover entry is popped first and skipped (its attempt was claimed); the count stays 0
    # rather than going to -1, where the next job queued would have been counted 0 for ever.
    assert (await match(api) or {}).get("id") == second
    [third] = await submit(api)
    await check_all(grid.db, wms_config)
    assert await counters(grid.db) == ([1], 2)
    assert (await match(api) or {}).get("id") == third


async def test_a_queue_counted_below_its_entries_is_mended_by_the_watchdog(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, settings: Settings, db_gate: TcpGate,
) -> None:
    config = wms_config.model_copy(update={"unqueued_repair_s": 3600, "counter_mend_s": 0.5})
    watchdog = JobWatchdog(grid.db, config)  # its repair of unqueued jobs a long way off
    await submit(api)
    await check_all(grid.db, wms_config)
    assert await match(api) is not None  # the queue exists, and is empty
    [stranded] = await submit(api)
    await cut_short(db_gate, settings.database, "update", task_queues.QUEUE_ENTRIES,
                    lambda db: checking.check_batch(db, config, "checker"))
    assert await counters(grid.db) == ([0], 1)
    assert await match(api) is None  # queued, counted 0: offered to no pilot

    async with asyncio.timeout(10):
        while await counters(grid.db) != ([1], 1):
            await asyncio.sleep(0.2)
            await watchdog.run_once()
    assert (await match(api) or {}).get("id") == stranded
    assert (await counter_recount.rebuild(grid.db, fix=False))["drifted"] == 0


async def test_the_watchdog_leaves_a_drift_that_changes_between_its_looks(
    api: RunningApi, grid: Grid, wms_config: WmsSettings,
) -> None:
    await submit(api, 3)
    await check_all(grid.db, wms_config)
    mender = counter_recount.QuietMender(interval_s=0.0)
    [queue] = await task_queues.all_queues(grid.db)
    await grid.db[task_queues.TASK_QUEUES].update_one({"_id": queue["_id"]}, {"$set": {"waiting": 0}})
    assert await mender.look(grid.db) == []  # first seen
    await grid.db[task_queues.TASK_QUEUES].update_one({"_id": queue["_id"]}, {"$set": {"waiting": 1}})
    assert await mender.look(grid.db) == []  # moved since: seen anew
    assert await mender.look(grid.db) == [f"waiting:{queue['_id']}"]
    assert await counters(grid.db) == ([3], 0)


async def test_a_counter_that_moved_since_it_was_read_is_not_set(api: RunningApi, grid: Grid) -> None:
    await submit(api)
    await check_all(grid.db, WmsSettings())
    [queue] = await task_queues.all_queues(grid.db)
    key = (task_queues.TASK_QUEUES, queue["_id"], "waiting")
    assert not await counter_recount.set_if_unmoved(grid.db, key, 5, 0)
    assert not await counter_recount.set_if_unmoved(grid.db, (task_queues.GROUP_USAGE, "cta", "running"), 3, 0)
    assert await counters(grid.db) == ([1], 0)
    assert await counter_recount.set_if_unmoved(grid.db, key, 1, 7)
    assert await counters(grid.db) == ([7], 0)
