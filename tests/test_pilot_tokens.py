"""Pilot credentials: the factory gives each pilot a short-lived token with scope jobs.pilot
only, bound to its site and its name; such a token cannot take jobs for another site, speak for
another pilot, report for a job it does not hold, or do anything a user does."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from catalogue.sites import Site, put_site
from kernel.errors import Conflict, Forbidden
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all
from wms.batch.interface import QueueConfig
from wms.config import WmsSettings
from wms.pilot_factory import FactorySettings, PilotFactory

USER = ("jobs.read", "jobs.write")


async def test_a_pilot_token_is_bound_to_its_site_and_its_pilot(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, tmp_path: Path
) -> None:
    await put_site(grid.db, Site(name="SITE-A"))
    await grid.add_file("/cta/a.dat", b"a\n", ["SITE-A-DISK"])
    await grid.add_file("/cta/b.dat", b"b\n", ["SITE-B-DISK"])
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_a, job_b] = await alice.submit_jobs([{"executable": "/bin/true", "input_data": ["/cta/a.dat"]},
                                                  {"executable": "/bin/true", "input_data": ["/cta/b.dat"]}])
    await check_all(grid.db, wms_config)
    factory = PilotFactory(grid.db, api.settings, FactorySettings(api_url=api.url, work_dir=tmp_path / "f",
                                                                  pilot_token_s=600), api.issuer)
    spec = factory.pilot_spec(QueueConfig(name="q", site="SITE-A", backend="local"), "SITE-A.q.one")
    token = spec.env["CAIRN_TOKEN"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["scope"], claims["cairn_site"], claims["cairn_pilot"]) == ("jobs.pilot", "SITE-A", "SITE-A.q.one")
    assert claims["exp"] - claims["iat"] == 600
    async with api.client(token) as pilot:
        with pytest.raises(Forbidden, match="bound to site SITE-A"):
            await pilot.match_job(pilot="SITE-A.q.one", site="SITE-B")
        with pytest.raises(Forbidden, match=r"bound to pilot SITE-A\.q\.one"):
            await pilot.match_job(pilot="SITE-A.q.other", site="SITE-A")
        order = await pilot.match_job(pilot="SITE-A.q.one", site="SITE-A")
        assert order is not None and order["id"] == job_a
        with pytest.raises(Forbidden):
            await pilot.submit_jobs([{"executable": "/bin/true"}])
        with pytest.raises(Forbidden):
            await pilot.list_jobs()
        with pytest.raises(Forbidden):
            await pilot.start_job(job_a, pilot="someone-else", attempt=1)
        # The job at SITE-B is matched to a pilot there; this pilot cannot report for it.
        async with api.client(api.token(sub="pilot-b", scopes=("jobs.pilot",))) as other:
            assert (await other.match_job(pilot="pilot-b", site="SITE-B"))["id"] == job_b  # type: ignore[index]
        with pytest.raises(Conflict):
            await pilot.start_job(job_b, pilot="SITE-A.q.one", attempt=1)
        assert (await pilot.start_job(job_a, pilot="SITE-A.q.one", attempt=1)) == {"kill": False}
