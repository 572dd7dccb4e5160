"""What the sixth audit of the job layer found, as specifications: another user cannot take or
block a job's outputs by registering a file under the GUID the job will give them; concurrent
extensions of a transformation each count; a job its stopped transformation could only ask to
kill is not run again by the transformation's monitor; a waiting job whose attempt's claimer stopped between
its two writes is settled by the watchdog instead of waiting for good; an output's metadata key
that is no field name is refused at submission (it was a 500); a transformation's job template
is bounded before it is filled, as a parametric job's; a NUL in what the pilot hands to the system
is refused; a second clean at once keeps the counts the first kept; a task pass makes and submits
nothing for a transformation stopped since the pass began."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from cairn.sdk import Client
from kernel.errors import InvalidInput
from productions import cleaning, task_creation, task_submission, transformations
from productions.daemons import TransformationFeeder, TransformationMonitor, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all
from wms import checker_claims, job_claims, jobs, task_queues
from wms.config import WmsSettings
from wms.daemons import JobWatchdog
from wms.outputs import output_guid

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write")
OUT = "/cta/out/o.txt"


def pilot_client(api: RunningApi) -> Client:
    return api.client(api.token(sub="pilot", scopes=("jobs.pilot",)))


async def alices_job_registers_its_output(api: RunningApi, grid: Grid, wms_config: Any,
                                          squat: str) -> dict[str, Any]:
    """alice's job declares OUT; bob (same group, /cta is group-writable) registers `squat` under
    the GUID he predicts for that output (job ids are counted, the GUID derived from id and LFN);
    then the job's pilot registers the output. What the registration answered."""
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/true",
                                             "outputs": [{"path": "o", "lfn": OUT, "se": "SITE-A-DISK"}]}])
    await check_all(grid.db, wms_config)
    async with api.client(api.token(sub="bob", scopes=USER)) as bob:
        result = await bob.register_files([{"lfn": squat, "size": 1, "adler32": "00000001",
                                            "guid": output_guid(job_id, OUT)}])
        assert not result["failed"], result
    async with pilot_client(api) as pilot:
        order = await pilot.match_job(pilot="p", site="SITE-A")
        assert order is not None and order["id"] == job_id
        await pilot.start_job(job_id, pilot="p", attempt=1)
        return dict(await pilot.register_job_outputs(job_id, pilot="p", attempt=1, files=[
            {"lfn": OUT, "url": order["outputs"][0]["url"], "size": 2, "adler32": "0000000a"}]))


async def test_a_file_under_a_predicted_output_guid_does_not_block_the_jobs_output(
    api: RunningApi, grid: Grid, wms_config: Any
) -> None:
    result = await alices_job_registers_its_output(api, grid, wms_config, squat="/cta/bob-squat.txt")
    assert result == {"successful": {OUT: "registered"}, "failed": {}}
    record = await grid.db["files"].find_one({"_id": OUT})
    assert record is not None and record["owner"] == "alice"


async def test_another_users_file_at_the_output_lfn_is_not_taken_over_by_the_job(
    api: RunningApi, grid: Grid, wms_config: Any
) -> None:
    result = await alices_job_registers_its_output(api, grid, wms_config, squat=OUT)
    assert result["failed"] == {OUT: "the LFN exists already and was not produced by this job"}
    record = await grid.db["files"].find_one({"_id": OUT})
    assert record is not None and (record["owner"], record["size"], record.get("produced_by")) == ("bob", 1, None)


async def test_the_output_salt_is_not_shown_with_the_job(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/true"}])
        shown = await alice.get_job(job_id)
    assert "output_salt" in await jobs.get_job(grid.db, job_id)
    assert "output_salt" not in shown


async def test_concurrent_extensions_each_add_their_tasks(api: RunningApi, grid: Grid) -> None:
    scopes = (*USER, "transfers.read", "transfers.write")
    async with api.client(api.token(sub="alice", scopes=scopes)) as alice:
        made = await alice.add_transformation({"name": "sim", "type": "mc", "max_tasks": 1,
                                               "job": {"executable": "/bin/true"}})
        await asyncio.gather(*(alice.transformation_action(made["id"], "extend", {"tasks": 1}) for _ in range(10)))
        assert (await alice.get_transformation(made["id"]))["spec"]["max_tasks"] == 11


async def a_waiting_job_claimed_by(api: RunningApi, grid: Grid, wms_config: WmsSettings, by: str) -> str:
    """alice's waiting job, whose attempt `by` claimed (a matcher also popped it from its queue)
    two minutes ago and then stopped before it moved the job (killed, or the database gone)."""
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/true"}])
    await check_all(grid.db, wms_config)
    if by != "kill":
        assert await task_queues.pop(grid.db, (await jobs.get_job(grid.db, job_id))["task_queue"]) == (job_id, 1)
    assert await job_claims.claim_attempt(grid.db, job_id, 1, by)
    past = jobs.now() - dt.timedelta(minutes=2)
    await grid.db["job_claims"].update_one({"_id": f"{job_id}:1"}, {"$set": {"at": past}})
    return job_id


async def test_a_job_whose_match_was_cut_short_is_matched_again(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    job_id = await a_waiting_job_claimed_by(api, grid, wms_config, "p-dead")
    assert await JobWatchdog(grid.db, wms_config).run_once() == 1
    stored = await jobs.get_job(grid.db, job_id)
    assert (stored["state"], stored["attempt"], stored["reschedules"]) == ("received", 2, 0)
    await check_all(grid.db, wms_config)
    async with pilot_client(api) as pilot:
        order = await pilot.match_job(pilot="p", site="SITE-A")
    assert order is not None and (order["id"], order["attempt"]) == (job_id, 2)
    assert await JobWatchdog(grid.db, wms_config).run_once() == 0  # settled once


async def test_a_kill_cut_short_is_finished_by_the_watchdog(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    job_id = await a_waiting_job_claimed_by(api, grid, wms_config, "kill")
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        assert (await alice.kill_job(job_id))["state"] == "kill_requested"  # asked again: nobody acted
    assert await JobWatchdog(grid.db, wms_config).run_once() == 1
    assert (await jobs.get_job(grid.db, job_id))["state"] == "killed"
    assert [q["waiting"] for q in await task_queues.all_queues(grid.db)] == [0]


@pytest.mark.parametrize("key", ["$set", "a.b", "", "9lives"])
async def test_an_output_metadata_key_that_is_no_field_name_is_refused(api: RunningApi, grid: Grid, key: str) -> None:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        with pytest.raises(InvalidInput):
            await alice.submit_jobs([{"executable": "/bin/true",
                                      "outputs": [{"path": "o", "lfn": OUT, "se": "SITE-A-DISK", "meta": {key: 1}}]}])
        with pytest.raises(InvalidInput):
            await alice.add_transformation({"name": "sim", "type": "mc", "max_tasks": 1, "job": {
                "executable": "/bin/true", "outputs": [{"path": "o", "lfn": "/cta/out/%(task)s", "se": "SITE-A-DISK",
                                                        "meta": {key: 1}}]}})
    assert await grid.db["jobs"].count_documents({}) == 0
    assert await grid.db["transformations"].count_documents({}) == 0


@pytest.mark.parametrize("description", [
    {"executable": "/bin/true\x00"},
    {"executable": "/bin/true", "arguments": ["a\x00b"]},
    {"executable": "/bin/true", "outputs": [{"path": "o\x00", "lfn": OUT, "se": "SITE-A-DISK"}]},
])
async def test_a_nul_in_what_the_pilot_hands_to_the_system_is_refused(
    api: RunningApi, grid: Grid, description: dict[str, Any]
) -> None:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        with pytest.raises(InvalidInput):
            await alice.submit_jobs([description])
    assert await grid.db["jobs"].count_documents({}) == 0


async def test_a_job_its_stopped_transformation_killed_late_is_not_run_again(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    await grid.add_file("/cta/raw/0.raw", b"x", ["SITE-A-DISK"], meta={"type": "raw"})
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        tid = (await alice.add_transformation({"name": "t", "input_query": "type=raw", "input_path": "/cta",
                                               "job": {"executable": "/bin/true"}}))["id"]
        for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
            await daemon.run_once()
        [task] = await alice.transformation_tasks(tid)
        # A checker pass holds the job when the transformation stops (then dies): the kill is a request.
        held = await checker_claims.claim_batch(grid.db, "received", "checking", "gone:1", 10)
        assert [j["_id"] for j in held] == [task["job"]]
        await grid.db["jobs"].update_one({"_id": task["job"]}, {"$set": {"lease_expires": jobs.now()}})
        assert await alice.transformation_action(tid, "stop") == {"tasks_cancelled": 0, "jobs_killed": 0}
        await JobWatchdog(grid.db, wms_config).run_once()
        await check_all(grid.db, wms_config)
        assert (await jobs.get_job(grid.db, task["job"]))["state"] == "killed"
        await TransformationMonitor(grid.db).run_once()
        job = await jobs.get_job(grid.db, task["job"])
        assert (job["state"], job["attempt"]) == ("killed", 1)
        assert [t["state"] for t in await alice.transformation_tasks(tid)] == ["killed"]
        assert [f["status"] for f in await alice.transformation_files(tid)] == ["unused"]


async def test_a_transformation_template_with_a_huge_printf_width_is_refused(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        with pytest.raises(InvalidInput) as refused:  # 1 GB per argument to fill, in the server, before
            await alice.add_transformation({"name": "t", "type": "mc", "max_tasks": 1,
                                            "job": {"executable": "/bin/true", "arguments": ["%(task)200d"]}})
    assert "width or precision above 100" in refused.value.message
    assert await grid.db["transformations"].count_documents({}) == 0


async def test_a_long_value_in_many_placeholders_fails_its_task_unbuilt(api: RunningApi, grid: Grid) -> None:
    await grid.add_file("/cta/raw/0.raw", b"x", ["SITE-A-DISK"], meta={"type": "raw", "blob": "x" * 100_000})
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        tid = (await alice.add_transformation({"name": "t", "input_query": "type=raw", "input_path": "/cta", "job": {
            "executable": "/bin/true", "arguments": ["-%(blob)s"] * 100}}))["id"]
        for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
            await daemon.run_once()
        [task] = await alice.transformation_tasks(tid)
    assert task["state"] == "failed" and "once filled; the limit is" in task["reason"]
    assert await grid.db["jobs"].count_documents({}) == 0


async def test_a_second_clean_at_once_keeps_the_counts_the_first_kept(api: RunningApi, grid: Grid) -> None:
    await grid.add_file("/cta/raw/0.raw", b"x", ["SITE-A-DISK"], meta={"type": "raw"})
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        tid = (await alice.add_transformation({"name": "t", "input_query": "type=raw", "input_path": "/cta",
                                               "job": {"executable": "/bin/true"}}))["id"]
        for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
            await daemon.run_once()
        await alice.transformation_action(tid, "stop")
        # Two clean calls: both read the transformation stopped, then one cleans before the other goes on.
        second = await transformations.get(grid.db, tid)
        first = await alice.transformation_action(tid, "clean")
        assert first["summary"]["tasks"]["killed"] == 1
        again = await cleaning.clean(grid.db, second)
        assert again["summary"] == first["summary"]
        assert (await alice.get_transformation(tid))["cleaned_summary"] == first["summary"]


async def test_a_task_pass_that_read_the_transformation_before_its_stop_submits_nothing(
    api: RunningApi, grid: Grid
) -> None:
    await grid.add_file("/cta/raw/0.raw", b"x", ["SITE-A-DISK"], meta={"type": "raw"})
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        tid = (await alice.add_transformation({"name": "t", "input_query": "type=raw", "input_path": "/cta",
                                               "job": {"executable": "/bin/true"}}))["id"]
        await TransformationFeeder(grid.db).run_once()
        # The task daemon's pass lists the running transformations; this one stops before its turn.
        [listed] = await transformations.running(grid.db, ("active", "flushing"))
        await alice.transformation_action(tid, "stop")
        assert await task_creation.create_tasks(grid.db, listed) == 0  # what its turn does, with what it read
        assert await task_submission.submit_tasks(grid.db, listed) == 0
        assert await grid.db["jobs"].count_documents({}) == 0
        assert [f["status"] for f in await alice.transformation_files(tid)] == ["unused"]
