"""What the job layer's audit found, as specifications: a job reaches only its VO's SEs and the
files its submitter can see, answers reveal no hidden file or other VO's job, parametric
substitution is bounded and refuses what is not text, and a user's kill outlives the watchdog."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.fixtures.authz import DATASET, PRIVATE, SHARED, World
from tests.fixtures.grid import check_all
from wms import control, jobs, pilot_records, task_queues
from wms.config import WmsSettings
from wms.description import MAX_JOBS_PER_SUBMISSION


def with_output(lfn: str, se: str) -> dict[str, Any]:
    return {"executable": "/bin/true", "outputs": [{"path": "o", "lfn": lfn, "se": se}]}


def parametric(arguments: list[str], parameters: Any) -> dict[str, Any]:
    return {"executable": "/bin/true", "arguments": arguments, "parameters": parameters}


async def refused_storing_nothing(world: World, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await world.call("bob", "POST", "/jobs", body)
    assert status == 400, (status, answer)
    assert answer["code"] == "invalid_input"
    assert await world.db["jobs"].count_documents({}) == 0
    return dict(answer)


async def test_an_output_on_another_vos_se_answers_like_a_missing_se(vo_world: World) -> None:
    missing = await vo_world.call("eve", "POST", "/jobs", with_output("/cta/mc/out-a", "NOPE"))
    foreign = await vo_world.call("eve", "POST", "/jobs", with_output("/cta/mc/out-b", "DISK2"))
    assert foreign[0] == missing[0] == 400
    assert foreign[1]["message"] == "unknown output SE(s): DISK2"
    assert (await vo_world.call("eve", "POST", "/jobs", with_output("/cta/mc/out-c", "DISK3")))[0] == 201


async def test_a_dataset_input_leaves_out_files_the_submitter_cannot_reach(world: World) -> None:
    status, answer = await world.call("carol", "POST", "/jobs", {"executable": "/bin/true", "input_dataset": DATASET})
    assert status == 201, answer
    status, job = await world.call("carol", "GET", f"/jobs/{answer['ids'][0]}")
    assert job["description"]["input_data"] == [SHARED]


async def test_an_output_over_a_hidden_file_answers_like_a_missing_one(world: World) -> None:
    hidden = await world.call("carol", "POST", "/jobs", with_output(PRIVATE, "DISK1"))
    missing = await world.call("carol", "POST", "/jobs", with_output("/lhcb/data/nothing-here.root", "DISK1"))
    assert hidden[0] == missing[0] == 403


async def test_an_output_over_another_vos_file_answers_like_a_missing_one(vo_world: World) -> None:
    hidden = await vo_world.call("eve", "POST", "/jobs", with_output(PRIVATE, "DISK3"))
    missing = await vo_world.call("eve", "POST", "/jobs", with_output("/lhcb/data/nothing-here.root", "DISK3"))
    assert hidden[0] == missing[0] == 403
    assert hidden[1]["details"]["lfns"][PRIVATE] == missing[1]["details"]["lfns"]["/lhcb/data/nothing-here.root"]


async def test_the_pilot_listing_shows_only_the_callers_vos_jobs(vo_world: World, wms_config: WmsSettings) -> None:
    status, answer = await vo_world.call("eve", "POST", "/jobs", {"executable": "/bin/true"})
    assert status == 201, answer
    [eve_job] = answer["ids"]
    await check_all(vo_world.db, wms_config)
    await pilot_records.record_intents(vo_world.db, [{"_id": "P1", "site": "SITE", "queue": "q", "backend": "local"}])
    async with vo_world.api.client(vo_world.api.token(sub="pilot", scopes=("jobs.pilot",))) as p:
        assert (await p.match_job(pilot="P1", site="SITE"))["id"] == eve_job
    status, listing = await vo_world.call("bob", "GET", "/pilots")
    assert status == 200 and [(p["name"], p["jobs"]) for p in listing] == [("P1", [])]
    status, listing = await vo_world.call("eve", "GET", "/pilots")
    assert [(p["name"], p["jobs"]) for p in listing] == [("P1", [eve_job])]


async def test_percent_c_beyond_unicode_is_refused(world: World) -> None:
    await refused_storing_nothing(world, parametric(["%(param)c"], [2**40]))


async def test_percent_c_giving_a_surrogate_is_refused(world: World) -> None:
    answer = await refused_storing_nothing(world, parametric(["%(param)c"], [65, 0xD800]))
    assert "surrogate" in answer["message"]


async def test_a_printf_width_beyond_the_bound_is_refused(world: World) -> None:
    answer = await refused_storing_nothing(world, parametric(["%(index)20000000d"], [1]))
    assert "width or precision" in answer["message"]
    await refused_storing_nothing(world, parametric(["%(index).20000000d"], [1]))


async def test_a_modest_printf_width_still_pads(world: World) -> None:
    status, answer = await world.call("bob", "POST", "/jobs", parametric(["%(index)05d", "%(param)-4s|"], ["a"]))
    assert status == 201, answer
    status, job = await world.call("bob", "GET", f"/jobs/{answer['ids'][0]}")
    assert job["description"]["arguments"] == ["00000", "a   |"]


async def test_many_substitutions_of_a_long_value_are_refused_before_they_are_built(world: World) -> None:
    answer = await refused_storing_nothing(world, parametric(["%(param)s"] * 70, ["x" * 1_000_000]))
    assert "characters of substituted text" in answer["message"]


async def test_the_job_limit_bounds_the_whole_submission(world: World) -> None:
    half = parametric([], {"stop": MAX_JOBS_PER_SUBMISSION // 2 + 1})
    answer = await refused_storing_nothing(world, {"jobs": [half, half]})
    assert "per submission" in answer["message"]


async def test_a_kill_during_a_stall_stays_a_kill(world: World, wms_config: WmsSettings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's kill is sent while the watchdog is between declaring the stall and rescheduling:
    the real `add_running` runs, and the kill request goes to the real server in its wake."""
    status, answer = await world.call("bob", "POST", "/jobs", {"executable": "/bin/true"})
    assert status == 201, answer
    [jid] = answer["ids"]
    await check_all(world.db, wms_config)
    async with world.api.client(world.api.token(sub="pilot", scopes=("jobs.pilot",))) as p:
        assert (await p.match_job(pilot="p1", site="SITE"))["id"] == jid
        await p.start_job(jid, pilot="p1", attempt=1)
    await world.db["jobs"].update_one({"_id": jid}, {"$set": {"heartbeat_at": jobs.now() - dt.timedelta(seconds=60)}})
    job = await jobs.get_job(world.db, jid)
    add_running = task_queues.add_running
    kills = []

    async def then_the_user_kills(db: Any, group: str, delta: int) -> None:
        await add_running(db, group, delta)
        kills.append(await world.call("bob", "POST", f"/jobs/{jid}/kill", {}))

    monkeypatch.setattr(task_queues, "add_running", then_the_user_kills)
    outcome = await control.declare_stalled(world.db, job, max_reschedules=5, silent_s=60)
    assert kills == [(200, {"id": jid, "state": "killed"})]
    assert outcome != "rescheduled"
    final = await jobs.get_job(world.db, jid)
    assert (final["state"], final["attempt"]) == ("killed", 1)
