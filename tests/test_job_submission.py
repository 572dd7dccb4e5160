"""Submitting jobs: descriptions are validated, expanded and stored; bad ones queue nothing."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import directory_document, insert_directories, now
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from kernel.principal import Principal
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all
from wms import jobs
from wms.config import WmsSettings

USER_SCOPES = ("jobs.read", "jobs.write")


def simple(**extra: object) -> dict[str, object]:
    return {"executable": "/bin/echo", "arguments": ["hello"], **extra}


async def job_count(db: AsyncDatabase[Document]) -> int:
    return await db["jobs"].count_documents({})


async def test_a_job_belongs_to_the_owner_and_group_of_the_token(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(sub="bob", groups=("cta-mc", "cta"), scopes=USER_SCOPES)) as bob:
        [job_id] = await bob.submit_jobs(simple(name="first"))
        job = await bob.get_job(job_id)
    assert (job["owner"], job["group"], job["state"]) == ("bob", "cta-mc", "received")
    assert [h["state"] for h in job["history"]] == ["received"]


async def test_a_parametric_description_becomes_one_job_per_value(api: RunningApi, grid: Grid) -> None:
    await grid.add_file("/cta/run/1.dat", b"x", ["SITE-A-DISK"])
    description = simple(
        name="sim-%(param)s", arguments=["--run", "%(param)s", "--index", "%(index)s"],
        input_data=["/cta/run/%(param)s.dat"],
        outputs=[{"path": "out.txt", "lfn": "/cta/out/%(param)s.txt", "se": "SITE-B-DISK"}],
        parameters={"start": 1, "stop": 4},
    )
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        ids = await alice.submit_jobs(description)
        jobs = [await alice.get_job(i) for i in ids]
    assert len(ids) == 3
    assert [j["name"] for j in jobs] == ["sim-1", "sim-2", "sim-3"]
    assert jobs[2]["description"]["arguments"] == ["--run", "3", "--index", "2"]
    assert jobs[1]["description"]["input_data"] == ["/cta/run/2.dat"]
    assert jobs[0]["description"]["outputs"][0]["lfn"] == "/cta/out/1.txt"


async def test_bulk_submission_stores_every_description(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        ids = await alice.submit_jobs([simple(name="a"), simple(name="b", priority=9)])
    assert len(ids) == 2
    assert await job_count(grid.db) == 2


@pytest.mark.parametrize("bad, words", [
    ({"arguments": ["no executable"]}, "executable"),
    (simple(priority=99), "priority"),
    (simple(input_data=["relative/path"]), "absolute"),
    (simple(outputs=[{"path": "../escape", "lfn": "/cta/o", "se": "SITE-A-DISK"}]), "relative path"),
    (simple(parameters=[]), "at least one value"),
    (simple(arguments=["%(nope)s"], parameters=[1]), "cannot substitute"),
    (simple(surprise=1), "surprise"),
    (simple(input_data=["/cta/a/f.root", "/cta/b/f.root"]), "names repeat"),
])
async def test_a_malformed_description_is_refused_with_the_reason(
    api: RunningApi, grid: Grid, bad: dict[str, object], words: str
) -> None:
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(InvalidInput) as err:
            await alice.submit_jobs(bad)
    assert words in err.value.message
    assert await job_count(grid.db) == 0


async def test_unknown_output_se_or_site_is_refused_and_nothing_queued(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(InvalidInput, match=r"unknown output SE.*NOWHERE-DISK"):
            await alice.submit_jobs([simple(), simple(outputs=[{"path": "o", "lfn": "/cta/o", "se": "NOWHERE-DISK"}])])
        with pytest.raises(InvalidInput, match=r"unknown site.*SITE-Z"):
            await alice.submit_jobs(simple(requirements={"sites": ["SITE-Z"]}))
    assert await job_count(grid.db) == 0


async def test_inputs_the_user_may_not_read_are_refused_and_nothing_queued(api: RunningApi, grid: Grid) -> None:
    await grid.add_file("/cta/private/x.dat", b"secret", ["SITE-A-DISK"], owner="carol", group="hess", mode=0o600)
    await grid.add_file("/cta/public/y.dat", b"open", ["SITE-A-DISK"], owner="carol", group="hess", mode=0o644)
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(Forbidden, match=r"/cta/private/x\.dat"):
            await alice.submit_jobs([simple(input_data=["/cta/public/y.dat"]),
                                     simple(input_data=["/cta/private/x.dat"])])
        assert await job_count(grid.db) == 0
        assert len(await alice.submit_jobs(simple(input_data=["/cta/public/y.dat"]))) == 1


async def test_inputs_behind_a_directory_the_user_may_not_search_fail_like_missing_ones(
    api: RunningApi, grid: Grid, wms_config: WmsSettings
) -> None:
    """A hidden input is accepted at submission exactly as a missing one is (refusing it would
    tell that it exists), and the checker, reading as the job's owner, fails the job naming it."""
    carol = Principal(sub="carol", vo="cta", groups=("hess",))
    await insert_directories(grid.db, [directory_document("/cta/carol", carol, mode=0o700, at=now())])
    await grid.add_file("/cta/carol/open.dat", b"x", ["SITE-A-DISK"], owner="carol", group="hess", mode=0o644)
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        [hidden] = await alice.submit_jobs(simple(input_data=["/cta/carol/open.dat"]))
        [missing] = await alice.submit_jobs(simple(input_data=["/cta/carol/none.dat"]))
    await check_all(grid.db, wms_config)
    for job_id, lfn in ((hidden, "/cta/carol/open.dat"), (missing, "/cta/carol/none.dat")):
        job = await jobs.get_job(grid.db, job_id)
        assert (job["state"], job["missing"]) == ("failed", [lfn])


async def test_outputs_that_exist_or_may_not_be_created_are_refused(api: RunningApi, grid: Grid) -> None:
    await grid.add_file("/cta/out/old.txt", b"old", ["SITE-A-DISK"])
    async with api.client(api.token(scopes=USER_SCOPES)) as alice:
        with pytest.raises(Conflict, match=r"exist already: /cta/out/old\.txt"):
            await alice.submit_jobs(simple(outputs=[{"path": "o", "lfn": "/cta/out/old.txt", "se": "SITE-A-DISK"}]))
        with pytest.raises(Forbidden, match=r"may not create 1 output file\(s\): /elsewhere/o"):
            await alice.submit_jobs(simple(outputs=[{"path": "o", "lfn": "/elsewhere/o", "se": "SITE-A-DISK"}]))
    assert await job_count(grid.db) == 0


async def test_only_the_owner_or_an_admin_sees_and_kills_a_job(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(sub="alice", scopes=USER_SCOPES)) as alice, \
            api.client(api.token(sub="mallory", scopes=USER_SCOPES)) as mallory, api.client() as admin:
        [job_id] = await alice.submit_jobs(simple())
        with pytest.raises(NotFound):  # as a missing job: ids are sequential, owners not told
            await mallory.get_job(job_id)
        with pytest.raises(NotFound):
            await mallory.kill_job(job_id)
        assert [j["id"] for j in await mallory.list_jobs()] == []
        assert [j["id"] for j in await admin.list_jobs(owner="alice")] == [job_id]
        assert (await admin.kill_job(job_id))["state"] == "killed"
        assert (await alice.get_job(job_id))["state"] == "killed"
        await mallory.submit_jobs([simple(), simple()])
        assert {k: v for k, v in (await alice.job_summary()).items() if v} == {"killed": 1}
        assert {k: v for k, v in (await admin.job_summary()).items() if v} == {"killed": 1, "received": 2}


async def test_submitting_needs_the_jobs_write_scope(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(scopes=("jobs.read",))) as reader:
        with pytest.raises(Forbidden, match=r"jobs\.write"):
            await reader.submit_jobs(simple())
