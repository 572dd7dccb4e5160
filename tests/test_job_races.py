"""Races between two calls on one job, run concurrently for many rounds: a kill that lands while
the checker moves the job on ends it, whichever state the checker left it in."""

from __future__ import annotations

import asyncio
import random

from kernel.principal import Principal
from tests.fixtures.grid import Grid
from wms import checking, control, jobs, submission
from wms.config import WmsSettings
from wms.description import JobDescription

ROUNDS = 150
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
