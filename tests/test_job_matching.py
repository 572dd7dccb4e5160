"""Matching pilots to jobs through the API: eligibility, priority, fair share, atomicity."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from cairn.sdk import Client
from kernel.errors import Conflict
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all
from wms import checker_claims, checking, jobs, task_queues
from wms.config import WmsSettings
from wms.daemons import JobWatchdog
from wms.outputs import attempt_url

USER = ("jobs.read", "jobs.write")


def pilot_client(api: RunningApi) -> Client:
    return api.client(api.token(sub="pilot", scopes=("jobs.pilot",)))


async def submit_as(api: RunningApi, user: str, group: str, *descriptions: dict[str, Any]) -> list[str]:
    async with api.client(api.token(sub=user, groups=(group,), scopes=USER)) as c:
        return await c.submit_jobs(list(descriptions))


def job(*inputs: str, **extra: Any) -> dict[str, Any]:
    return {"executable": "/bin/true", "input_data": list(inputs), **extra}


async def test_a_pilot_gets_only_jobs_whose_data_is_at_its_site(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    await grid.add_file("/cta/b", b"b", ["SITE-B-DISK"])
    [job_id] = await submit_as(api, "alice", "cta", job("/cta/b"))
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot:
        assert await pilot.match_job(pilot="p-a", site="SITE-A") is None
        order = await pilot.match_job(pilot="p-b", site="SITE-B")
    assert order is not None and order["id"] == job_id
    assert order["inputs"][0]["replicas"][0]["url"] == grid.url("SITE-B-DISK", "/cta/b")
    stored = await jobs.get_job(grid.db, job_id)
    assert (stored["state"], stored["site"], stored["pilot"]) == ("matched", "SITE-B", "p-b")


async def test_resources_and_tags_must_satisfy_the_requirements(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    await submit_as(api, "alice", "cta", job(requirements={"cpu": 8, "memory_mb": 16000, "tags": ["gpu"]}))
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot:
        assert await pilot.match_job(pilot="p", site="SITE-A", cpu=4, memory_mb=32000, tags=["gpu"]) is None
        assert await pilot.match_job(pilot="p", site="SITE-A", cpu=8, memory_mb=8000, tags=["gpu"]) is None
        assert await pilot.match_job(pilot="p", site="SITE-A", cpu=8, memory_mb=16000) is None
        assert await pilot.match_job(pilot="p", site="SITE-A", cpu=8, memory_mb=16000, tags=["gpu", "ssd"])


async def test_the_highest_priority_job_goes_first(api: RunningApi, grid: Grid, wms_config: WmsSettings) -> None:
    ids = await submit_as(api, "alice", "cta", job(priority=2), job(priority=9), job(priority=5))
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot:
        got = [(await pilot.match_job(pilot="p", site="SITE-C"))["id"] for _ in range(3)]  # type: ignore[index]
    assert got == [ids[1], ids[2], ids[0]]


async def test_two_pilots_racing_for_one_job_exactly_one_gets_it(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    [job_id] = await submit_as(api, "alice", "cta", job())
    await check_all(grid.db, wms_config)
    clients = [pilot_client(api) for _ in range(8)]
    try:
        orders = await asyncio.gather(*[c.match_job(pilot=f"p{i}", site="SITE-A") for i, c in enumerate(clients)])
    finally:
        for c in clients:
            await c.close()
    winners = [o for o in orders if o is not None]
    assert [w["id"] for w in winners] == [job_id]
    history = (await jobs.get_job(grid.db, job_id))["history"]
    assert [h["state"] for h in history].count("matched") == 1


async def test_many_pilots_racing_for_many_jobs_never_share_one(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    ids = await submit_as(api, "alice", "cta", *[job(name=f"j{i}") for i in range(12)])
    await check_all(grid.db, wms_config)
    clients = [pilot_client(api) for _ in range(6)]

    async def drain(i: int, c: Client) -> list[str]:
        got = []
        while (order := await c.match_job(pilot=f"p{i}", site="SITE-A")) is not None:
            got.append(order["id"])
        return got

    try:
        results = await asyncio.gather(*[drain(i, c) for i, c in enumerate(clients)])
    finally:
        for c in clients:
            await c.close()
    matched = [j for got in results for j in got]
    assert sorted(matched) == sorted(ids)


async def test_fair_share_prefers_the_group_with_fewer_running_jobs(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    busy = await submit_as(api, "alice", "busy", job(priority=9), job(priority=9), job(priority=9))
    [idle] = await submit_as(api, "bob", "idle", job(priority=1))
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot:
        first = await pilot.match_job(pilot="p", site="SITE-A")
        second = await pilot.match_job(pilot="p", site="SITE-A")
    # Both groups start at 0 running: priority decides; then 'busy' holds a pilot and 'idle' none.
    assert first is not None and first["id"] == busy[0]
    assert second is not None and second["id"] == idle
    usage = await task_queues.group_usage(grid.db, ["busy", "idle"])
    assert (usage["busy"]["running"], usage["idle"]["running"]) == (1, 1)


async def test_a_larger_share_holds_proportionally_more_pilots(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, admin: Client
) -> None:
    await admin.set_job_share("big", 3.0)
    await submit_as(api, "alice", "big", *[job() for _ in range(6)])
    await submit_as(api, "bob", "small", *[job() for _ in range(6)])
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot:
        orders = [await pilot.match_job(pilot="p", site="SITE-A") for _ in range(8)]
    groups = [(await jobs.get_job(grid.db, o["id"]))["group"] for o in orders if o]
    assert (groups.count("big"), groups.count("small")) == (6, 2)
    assert await admin.job_shares() == [{"group": "big", "vo": "local", "share": 3.0, "running": 6},
                                        {"group": "small", "vo": "local", "share": 1.0, "running": 2}]


async def test_killing_a_waiting_job_takes_it_out_of_its_queue(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    [job_id] = await submit_as(api, "alice", "cta", job())
    await check_all(grid.db, wms_config)
    async with api.client(api.token(sub="alice", scopes=USER)) as alice, pilot_client(api) as pilot:
        assert (await alice.kill_job(job_id))["state"] == "killed"
        assert await pilot.match_job(pilot="p", site="SITE-A") is None
        with pytest.raises(Conflict):
            await alice.kill_job(job_id)


async def test_killing_a_running_job_reaches_its_pilot_through_the_heartbeat(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    [job_id] = await submit_as(api, "alice", "cta", job())
    await check_all(grid.db, wms_config)
    async with api.client(api.token(sub="alice", scopes=USER)) as alice, pilot_client(api) as pilot:
        order = await pilot.match_job(pilot="p", site="SITE-A")
        assert order is not None
        assert (await pilot.start_job(job_id, pilot="p", attempt=1)) == {"kill": False}
        assert (await alice.kill_job(job_id))["state"] == "kill_requested"
        assert (await pilot.heartbeat_job(job_id, pilot="p", attempt=1)) == {"kill": True}
        await pilot.report_job(job_id, pilot="p", attempt=1, state="killed", reason="killed by request")
        assert (await alice.get_job(job_id))["state"] == "killed"
        usage = await task_queues.group_usage(grid.db, ["cta"])
        assert usage["cta"]["running"] == 0


async def test_a_pilot_that_lost_its_attempt_cannot_report(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    [job_id] = await submit_as(api, "alice", "cta", job())
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot:
        await pilot.match_job(pilot="old", site="SITE-A")
        await pilot.start_job(job_id, pilot="old", attempt=1)
        with pytest.raises(Conflict):
            await pilot.heartbeat_job(job_id, pilot="someone-else", attempt=1)
        with pytest.raises(Conflict):
            await pilot.report_job(job_id, pilot="old", attempt=2, state="done")
        await pilot.report_job(job_id, pilot="old", attempt=1, state="done", exit_code=0, stdout="ok\n")
        with pytest.raises(Conflict):
            await pilot.report_job(job_id, pilot="old", attempt=1, state="failed")
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        logs = await alice.job_logs(job_id)
    assert (logs["state"], logs["exit_code"], logs["stdout"]) == ("done", 0, "ok\n")


async def test_outputs_of_a_rescheduled_job_are_registered_once_with_provenance(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    await grid.add_file("/cta/in/1", b"in", ["SITE-A-DISK"])
    out = {"path": "o.txt", "lfn": "/cta/out/o.txt", "se": "SITE-A-DISK"}
    [job_id] = await submit_as(api, "alice", "cta", job("/cta/in/1", outputs=[out]))
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot, api.client() as admin:
        for attempt, checksum in ((1, "0000000a"), (2, "0000000b")):
            url = attempt_url(grid.url("SITE-A-DISK", "/cta/out/o.txt"), job_id, attempt)
            order = await pilot.match_job(pilot=f"p{attempt}", site="SITE-A")
            assert order is not None and order["attempt"] == attempt
            assert order["outputs"][0]["url"] == url
            await pilot.start_job(job_id, pilot=f"p{attempt}", attempt=attempt)
            result = await pilot.register_job_outputs(
                job_id, pilot=f"p{attempt}", attempt=attempt,
                files=[{"lfn": "/cta/out/o.txt", "url": url, "size": 2, "adler32": checksum}])
            assert result == {"successful": {"/cta/out/o.txt": "registered" if attempt == 1 else "updated"},
                              "failed": {}}
            if attempt == 1:
                await pilot.report_job(job_id, pilot="p1", attempt=1, state="failed", reason="node lost")
                await admin.reschedule_job(job_id)
                await check_all(grid.db, wms_config)
    docs = await grid.db["files"].find({"_id": "/cta/out/o.txt"}).to_list()
    assert len(docs) == 1
    assert docs[0]["ancestors"] == ["/cta/in/1"]
    assert docs[0]["produced_by"] == {"job": job_id, "attempt": 2}
    assert (docs[0]["adler32"], docs[0]["owner"], len(docs[0]["replicas"])) == ("0000000b", "alice", 1)
    assert docs[0]["replicas"][0]["url"] == attempt_url(grid.url("SITE-A-DISK", "/cta/out/o.txt"), job_id, 2)
    assert (docs[0]["group"], docs[0]["parent"]) == ("cta", "/cta/out")  # registered through the catalogue


async def test_an_output_lfn_registered_by_someone_else_meanwhile_is_refused(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    [job_id] = await submit_as(api, "alice", "cta",
                               job(outputs=[{"path": "t", "lfn": "/cta/out/taken", "se": "SITE-A-DISK"}]))
    await check_all(grid.db, wms_config)
    await grid.add_file("/cta/out/taken", b"theirs", ["SITE-A-DISK"], owner="bob")
    async with pilot_client(api) as pilot:
        order = await pilot.match_job(pilot="p", site="SITE-A")
        assert order is not None
        await pilot.start_job(job_id, pilot="p", attempt=1)
        result = await pilot.register_job_outputs(job_id, pilot="p", attempt=1, files=[
            {"lfn": "/cta/out/taken", "url": order["outputs"][0]["url"], "size": 1, "adler32": "00000001"}])
    assert result["failed"] == {"/cta/out/taken": "the LFN exists already and was not produced by this job"}
    assert (await grid.db["files"].find_one({"_id": "/cta/out/taken"}))["size"] == len(b"theirs")


async def test_a_job_queued_twice_is_still_matched_once(api: RunningApi, grid: Grid, wms_config: WmsSettings) -> None:
    [job_id] = await submit_as(api, "alice", "cta", job())
    await check_all(grid.db, wms_config)
    # What the watchdog's repair can leave behind when a checker died after queueing a job.
    stored = await jobs.get_job(grid.db, job_id)
    await checking.enqueue(grid.db, checking.queue_key(stored, []), [(job_id, 1)])
    async with pilot_client(api) as pilot:
        first = await pilot.match_job(pilot="p1", site="SITE-A")
        second = await pilot.match_job(pilot="p2", site="SITE-A")
    assert first is not None and first["id"] == job_id
    assert second is None


async def test_the_watchdog_queues_a_job_its_checker_left_unqueued(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    [job_id] = await submit_as(api, "alice", "cta", job())
    await check_all(grid.db, wms_config)
    # A checker that died between recording 'waiting' and queueing the job.
    await grid.db["task_queue_entries"].delete_many({})
    await grid.db["task_queues"].update_many({}, {"$set": {"waiting": 0}})
    past = jobs.now() - datetime.timedelta(minutes=5)
    await grid.db["jobs"].update_one({"_id": job_id}, {"$set": {"enqueued": False, "updated": past}})
    async with pilot_client(api) as pilot:
        assert await pilot.match_job(pilot="p", site="SITE-A") is None
        assert await JobWatchdog(grid.db, wms_config).run_once() == 1
        order = await pilot.match_job(pilot="p", site="SITE-A")
    assert order is not None and order["id"] == job_id


async def test_the_watchdog_frees_the_claims_of_a_checker_that_died_and_only_those(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    ids = await submit_as(api, "alice", "cta", job(), job(), job())
    # A checker pass took all three and died; another pass, alive, holds a fresh claim on none.
    taken = await checker_claims.claim_batch(grid.db, "received", "checking", "dead-host:0a1b2c3d", 10)
    assert sorted(doc["_id"] for doc in taken) == sorted(ids)
    expired = jobs.now() - datetime.timedelta(seconds=1)
    await grid.db["jobs"].update_many({"_id": {"$in": ids[:2]}}, {"$set": {"lease_expires": expired}})
    await grid.db["jobs"].update_one({"_id": ids[1]}, {"$set": {"state": "staging"}})
    assert await JobWatchdog(grid.db, wms_config).run_once() == 2
    after = {doc["_id"]: doc for doc in await grid.db["jobs"].find({"_id": {"$in": ids}}).to_list()}
    assert (after[ids[0]]["state"], after[ids[0]]["lease_owner"]) == ("received", None)
    assert after[ids[0]]["history"][-1]["reason"] == "its checker stopped; checking again"
    assert (after[ids[1]]["state"], after[ids[1]]["lease_owner"]) == ("staging", None)
    assert (after[ids[2]]["state"], after[ids[2]]["lease_owner"]) == ("checking", "dead-host:0a1b2c3d")
    assert await JobWatchdog(grid.db, wms_config).run_once() == 0
    assert await check_all(grid.db, wms_config) == 2  # the two freed; the live claim's job stays its own
    assert (await jobs.get_job(grid.db, ids[2]))["lease_owner"] == "dead-host:0a1b2c3d"
