"""A VO's end and an installation's move to VOs (issue 14): `cairn vo delete` refuses while the
VO has data and never takes the default VO; `cairn vo migrate` gives objects stored before VOs
to a VO, once."""

from __future__ import annotations

import json
from typing import Any

from kernel.principal import DEFAULT_VO
from tests.fixtures.authz import USER_SCOPES, World
from tests.fixtures.cli import run_cli
from tests.test_authz_matrix import bobs_objects
from wms.jobs import JOBS

STAMPED = ("rules", "subscriptions", "transfer_requests", JOBS, "transformations", "productions")


async def cairn(world: World, who: str, *args: str) -> tuple[int, Any, str]:
    done = await run_cli(world.api.url, world.tokens[who], *args)
    out = json.loads(done.stdout) if "--json" in args and done.returncode == 0 else done.stdout
    return done.returncode, out, done.stderr


async def test_a_vo_with_data_is_not_deleted_and_the_refusal_names_what_remains(vo_world: World) -> None:
    before = await vo_world.snapshot()
    code, _, err = await cairn(vo_world, "admin", "vo", "delete", "cta")
    assert code == 2 and "1 file(s) below /cta" in err and "1 directorie(s) below /cta" in err, err
    assert await vo_world.snapshot() == before
    status, answer = await vo_world.call("admin", "DELETE", "/vos/lhcb")
    assert status == 409 and "dataset(s) or container(s) in scope lhcb" in answer["message"], answer
    assert answer["details"]["remains"], answer


async def test_an_empty_vo_is_deleted_with_its_root(vo_world: World) -> None:
    status, _ = await vo_world.call("admin", "PUT", "/vos/km3net", {"name": "km3net", "roots": ["/km3net"],
                                                                    "scopes": ["km3net"]})
    assert status == 200
    code, out, err = await cairn(vo_world, "admin", "vo", "delete", "km3net")
    assert code == 0 and "VO km3net deleted" in out, err
    status, _ = await vo_world.call("admin", "GET", "/vos/km3net")
    assert status == 404
    status, _ = await vo_world.call("admin", "GET", "/namespace/stat", params={"path": "/km3net"})
    assert status == 404


async def test_a_deleted_vos_name_is_never_given_to_a_new_vo(vo_world: World) -> None:
    # What the deleted VO left (here a job of its member) still carries its name: a new VO of that
    # name would be handed it.
    body = {"name": "km3net", "roots": ["/km3net"], "members": ["olduser"]}
    assert (await vo_world.call("admin", "PUT", "/vos/km3net", body))[0] == 200
    vo_world.tokens["olduser"] = vo_world.api.token("olduser", vo="km3net", scopes=USER_SCOPES)
    status, answer = await vo_world.call("olduser", "POST", "/jobs", {"executable": "/bin/true", "name": "secret-run"})
    assert status in (200, 201), answer
    assert (await vo_world.call("admin", "DELETE", "/vos/km3net"))[0] == 200
    status, answer = await vo_world.call("admin", "PUT", "/vos/km3net", {**body, "admins": ["newadmin"]})
    assert status == 409 and "choose another name" in answer["message"], answer
    vo_world.tokens["newadmin"] = vo_world.api.token("newadmin", vo="km3net", scopes=("admin", *USER_SCOPES))
    status, _ = await vo_world.call("newadmin", "GET", "/jobs")
    assert status == 401  # no VO of that name: its tokens are refused, and its jobs stay out of reach


async def test_only_a_global_admin_deletes_a_vo(vo_world: World) -> None:
    await vo_world.call("admin", "PUT", "/vos/km3net", {"name": "km3net", "roots": ["/km3net"]})
    for who in ("ctaadmin", "eve"):
        status, _ = await vo_world.call(who, "DELETE", "/vos/km3net")
        assert status == 403
    status, _ = await vo_world.call("ctaadmin", "DELETE", "/vos/cta")
    assert status == 403


async def test_the_default_vo_cannot_be_deleted(vo_world: World) -> None:
    status, _ = await vo_world.call("admin", "PUT", f"/vos/{DEFAULT_VO}", {"name": DEFAULT_VO, "roots": ["/home"]})
    assert status == 200
    status, answer = await vo_world.call("admin", "DELETE", f"/vos/{DEFAULT_VO}")
    assert status == 409 and "default VO" in answer["message"], answer
    status, _ = await vo_world.call("admin", "GET", f"/vos/{DEFAULT_VO}")
    assert status == 200


async def unowned(world: World) -> dict[str, int]:
    return {name: await world.db[name].count_documents({"vo": None}) for name in STAMPED}


async def test_migrate_gives_objects_stored_before_vos_to_the_default_vo_once(world: World) -> None:
    await bobs_objects(world)  # a single-VO installation: rule, request, subscription, job, ...
    for name in STAMPED:  # as stored before VOs were recorded
        await world.db[name].update_many({}, {"$unset": {"vo": ""}})
    before = await unowned(world)
    assert all(before.values()), before
    world.tokens["admin"] = world.api.token("root", vo="*", groups=("admin",), scopes=("admin",))
    world.tokens["bob"] = world.api.token("bob", vo=DEFAULT_VO, groups=("lhcb",), scopes=USER_SCOPES)
    status, _ = await world.call("admin", "PUT", f"/vos/{DEFAULT_VO}", {"name": DEFAULT_VO, "roots": ["/"],
                                                                        "scopes": ["*"]})
    assert status == 200
    status, answer = await world.call("admin", "POST", "/vos/nope/migrate")
    assert status == 404 and await unowned(world) == before, answer
    code, out, err = await cairn(world, "admin", "vo", "migrate", "--json")
    assert code == 0, err
    assert out == {"vo": DEFAULT_VO, "adopted": before}
    assert {name: await world.db[name].count_documents({"vo": DEFAULT_VO}) for name in STAMPED} == before
    for route in ("/rules", "/requests", "/jobs", "/transformations", "/productions", "/subscriptions"):
        status, seen = await world.call("bob", "GET", route)
        assert status == 200 and seen, (route, seen)
    code, out, err = await cairn(world, "admin", "vo", "migrate", "--to", DEFAULT_VO, "--json")
    assert code == 0 and out["adopted"] == dict.fromkeys(STAMPED, 0), (out, err)


async def test_only_a_global_admin_migrates(vo_world: World) -> None:
    for who in ("ctaadmin", "eve"):
        status, _ = await vo_world.call(who, "POST", "/vos/cta/migrate")
        assert status == 403
