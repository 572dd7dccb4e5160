"""One site's batch system down stops only that site's pilots: the factory goes on with the
other queues (a Slurm controller that no longer answered made every pass raise at that queue,
so no queue after it, at any site, got a pilot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.embedded_db import free_port
from catalogue.site_queues import SiteQueue, put_queue
from catalogue.sites import Site, put_site
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all, factory_until_pilots_done, wait_for
from wms import pilot_records
from wms.config import WmsSettings

USER = ("jobs.read", "jobs.write")


def dead_controller(tmp_path: Path) -> Path:
    """A Slurm configuration whose controller does not listen (it is down)."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=down\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={free_port()}\n"
                    "MessageTimeout=2\n")
    return conf


async def test_a_queue_whose_batch_system_is_down_does_not_stop_the_other_queues(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(dead_controller(tmp_path)))
    for site in ("SITE-A", "SITE-B"):
        await put_site(grid.db, Site(name=site))
    # SITE-A's queue (looked at first) has a pilot submitted while its controller still answered.
    await put_queue(grid.db, SiteQueue(name="batch", site="SITE-A", backend="slurm"))
    await pilot_records.record_intents(grid.db, [{"_id": "SITE-A.batch.old", "site": "SITE-A", "queue": "batch",
                                                  "backend": "slurm", "log": str(tmp_path / "old.log")}])
    await pilot_records.set_submitted(grid.db, "SITE-A.batch.old", "4242")
    await put_queue(grid.db, SiteQueue(name="local", site="SITE-B", backend="local", max_waiting=1, max_running=1))
    await grid.add_file("/cta/b.dat", b"x\n", ["SITE-B-DISK"])
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        ids = await alice.submit_jobs([{"executable": "/bin/true", "input_data": ["/cta/b.dat"]}])
    await check_all(grid.db, wms_config)
    await factory_until_pilots_done(api, grid.db, tmp_path / "factory", "SITE-B")
    assert [j["site"] for j in await wait_for(grid.db, ids, {"done"})] == ["SITE-B"]
    old = await pilot_records.list_pilots(grid.db, site="SITE-A")
    assert [(p["_id"], p["state"]) for p in old] == [("SITE-A.batch.old", "waiting")]  # left as it was
