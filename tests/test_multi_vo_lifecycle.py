"""A VO's end and an installation's move to VOs (issue 14): `cairn vo delete` refuses while the
VO has data or open work (jobs, rules, requests, subscriptions, transformations: left behind,
they stayed owned by a VO whose name is retired) and never takes the default VO; `cairn vo
migrate` gives objects stored before VOs to a VO, once."""

from __future__ import annotations

import json
from typing import Any

from kernel.principal import DEFAULT_VO
from tests.fixtures.authz import ALICES, USER_SCOPES, World
from tests.fixtures.cli import run_cli
from tests.test_authz_matrix import TRANSFORMATION, bobs_objects
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
    assert (await vo_world.call("admin", "POST", f"/jobs/{answer['ids'][0]}/kill", {}))[0] == 200  # ended, kept
    assert (await vo_world.call("admin", "DELETE", "/vos/km3net"))[0] == 200
    status, answer = await vo_world.call("admin", "PUT", "/vos/km3net", {**body, "admins": ["newadmin"]})
    assert status == 409 and "choose another name" in answer["message"], answer
    vo_world.tokens["newadmin"] = vo_world.api.token("newadmin", vo="km3net", scopes=("admin", *USER_SCOPES))
    status, _ = await vo_world.call("newadmin", "GET", "/jobs")
    assert status == 401  # no VO of that name: its tokens are refused, and its jobs stay out of reach


async def _km3net_with_work(world: World) -> dict[str, str]:
    """VO km3net, no data, and its member's open job, subscription and transformation: their ids."""
    body = {"name": "km3net", "roots": ["/km3net"], "scopes": ["km3net"], "members": ["olduser"]}
    assert (await world.call("admin", "PUT", "/vos/km3net", body))[0] == 200
    world.tokens["olduser"] = world.api.token("olduser", vo="km3net", scopes=USER_SCOPES)
    ids = {}
    for key, route, item in (("job", "/jobs", {"executable": "/bin/true"}),
                             ("subscription", "/subscriptions", {"name": "raw", "rule": {"copies": 1,
                                                                                         "expression": "DISK1"}}),
                             ("transformation", "/transformations", TRANSFORMATION)):
        status, answer = await world.call("olduser", "POST", route, item)
        assert status == 201, answer
        ids[key] = answer["ids"][0] if key == "job" else answer.get("id", answer.get("name"))
    return ids


async def test_a_vo_with_open_work_is_not_deleted_and_the_refusal_names_it_and_what_ends_it(
    vo_world: World,
) -> None:
    ids = await _km3net_with_work(vo_world)
    before = await vo_world.snapshot()
    status, answer = await vo_world.call("admin", "DELETE", "/vos/km3net")
    assert status == 409, answer
    for said in ("1 open job(s) (end them with cairn job kill)",
                 "1 subscription(s) (end them with cairn subscription delete)",
                 "1 transformation(s) not completed or cleaned (end them with cairn transformation delete"):
        assert said in answer["message"], (said, answer)
    assert (await cairn(vo_world, "admin", "vo", "delete", "km3net"))[0] == 2
    assert await vo_world.snapshot() == before
    for command in (("job", "kill", ids["job"]), ("subscription", "delete", "km3net:raw"),
                    ("transformation", "delete", ids["transformation"])):
        code, _, err = await cairn(vo_world, "admin", *command)
        assert code == 0, (command, err)
    code, out, err = await cairn(vo_world, "admin", "vo", "delete", "km3net")
    assert code == 0 and "VO km3net deleted" in out, err


async def test_a_vo_with_an_open_rule_or_request_is_not_deleted_until_they_end(vo_world: World) -> None:
    status, rule = await vo_world.call("eve", "POST", "/rules", {"did": ALICES, "copies": 1, "expression": "DISK3"})
    assert status == 201, rule
    status, request = await vo_world.call("eve", "POST", "/requests/transfers", {"lfns": [ALICES], "dest_se": "DISK3"})
    assert status == 201 and request["successful"], request
    before = await vo_world.snapshot()
    status, answer = await vo_world.call("admin", "DELETE", "/vos/cta")
    assert status == 409, answer
    assert "1 rule(s) (end them with cairn rule delete)" in answer["details"]["remains"], answer
    assert any(r.startswith("1 open transfer, stage or deletion request(s) (end them with cairn requests cancel)")
               for r in answer["details"]["remains"]), answer
    assert await vo_world.snapshot() == before
    for command in (("rule", "delete", rule["id"]), ("requests", "cancel", request["successful"][ALICES])):
        code, _, err = await cairn(vo_world, "admin", *command)
        assert code == 0, (command, err)
    status, answer = await vo_world.call("admin", "DELETE", "/vos/cta")
    assert status == 409 and answer["details"]["remains"] == [  # its data only: the admin removes it next
        "1 file(s) below /cta", "1 directorie(s) below /cta"], answer


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
