"""A job's tape-only inputs are staged to a disk SE its VO uses: never to another VO's SE."""

from __future__ import annotations

from tests.fixtures.authz import World, register_with_bytes
from tests.fixtures.grid import check_all
from wms import jobs
from wms.config import WmsSettings

TAPED = "/cta/mc/taped.dat"


async def test_a_jobs_staging_copy_goes_only_to_its_vos_disk(vo_world: World, wms_config: WmsSettings) -> None:
    tape = next(se for se in vo_world.ses if se.name == "TAPE1")
    async with vo_world.client("admin") as admin:
        await register_with_bytes(admin, [tape], [(TAPED, 0o644)])  # cta's file, on the shared tape only
        await admin.request("PATCH", "/ses/DISK1", json_body={"write_enabled": False})
    # SITE's writable disks are now DISK2 (lhcb's alone) and DISK3 (cta's).
    status, answer = await vo_world.call("eve", "POST", "/jobs", {"executable": "/bin/true", "input_data": [TAPED]})
    assert status == 201, answer
    await check_all(vo_world.db, wms_config)
    job = await jobs.get_job(vo_world.db, answer["ids"][0])
    assert (job["state"], job.get("staging_to")) == ("staging", "DISK3"), job["reason"]
