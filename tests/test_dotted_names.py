"""Names that become keys of a stored document hold no dot, where MongoDB reads a path: an SE
given to a VO (`ses.SITE.DISK`: FerretDB refuses the record, and on MongoDB a VO admin's switch
leaves a record no server can read) and a site's batch queue (`queues.short.q`: every listing of
queues, the pilot factory's too, then failed). Refused with a 400 instead."""

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


async def test_a_dotted_queue_name_is_refused_and_the_queues_stay_listable(vo_world: World) -> None:
    status, answer = await vo_world.call("admin", "PUT", "/sites/SITE/queues/short.q", {"backend": "local"})
    assert status == 400 and "short.q" in answer["message"], answer
    status, answer = await vo_world.call("admin", "PUT", "/sites/SITE/queues/short-q", {"backend": "local"})
    assert status == 200, answer
    status, answer = await vo_world.call("admin", "GET", "/site-queues")
    assert status == 200 and [q["name"] for q in answer] == ["short-q"], answer
    status, answer = await vo_world.call("admin", "DELETE", "/sites/SITE/queues/short.q")
    assert status == 404, answer
