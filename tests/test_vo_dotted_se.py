"""An SE whose name holds a dot (`SITE.DISK`, allowed by the SE name pattern) under a VO: the
VO's record would hold it as a key, where a dot is a path (FerretDB refuses the record; on
MongoDB the VO admin's switch `ses.SITE.DISK` leaves a record no server can read): refused, 400."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.authz import World
from tests.fixtures.transfers import add_ses, disk_se


async def test_a_dotted_se_is_refused_to_a_vo_and_the_registry_stays_readable(
    vo_world: World, tmp_path: Path
) -> None:
    await add_ses(vo_world.db, disk_se("SITE.DISK", tmp_path / "dotted"))
    status, cta = await vo_world.call("admin", "GET", "/vos/cta")
    assert status == 200, cta
    cta["ses"]["SITE.DISK"] = {}
    status, answer = await vo_world.call("admin", "PUT", "/vos/cta", cta)
    assert status == 400 and "SITE.DISK" in answer["message"], answer
    status, answer = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/ses/SITE.DISK", {"write_enabled": False})
    assert status == 404, answer
    for who in ("eve", "bob", "admin"):
        status, answer = await vo_world.call(who, "GET", "/whoami")
        assert status == 200, (who, answer)
