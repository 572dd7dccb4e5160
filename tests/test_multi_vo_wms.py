"""The job layer of several VOs on one installation (issue 14), on tests.fixtures.multi_vo:
fair shares between VOs and within them, job ids per VO, and each VO's sites."""

from __future__ import annotations

import json
from typing import Any

from cairn.sdk import Client
from tests.fixtures.authz import World
from tests.fixtures.cli import run_cli
from tests.fixtures.grid import check_all
from wms import task_queues
from wms.config import WmsSettings

JOB = {"executable": "/bin/true"}


def pilot(world: World) -> Client:
    return world.api.client(world.api.token(sub="pilot", scopes=("jobs.pilot",)))


async def submit(world: World, who: str, count: int, **extra: Any) -> list[str]:
    status, answer = await world.call(who, "POST", "/jobs", {"jobs": [{**JOB, **extra}] * count})
    assert status == 201, answer
    return list(answer["ids"])


async def vo_of_matches(world: World, count: int, site: str = "SITE") -> dict[str, int]:
    taken: dict[str, int] = {}
    async with pilot(world) as p:
        for n in range(count):
            order = await p.match_job(pilot=f"p{n}", site=site)
            if order is None:
                break
            vo = order["owner"].partition(":")[0]
            taken[vo] = taken.get(vo, 0) + 1
    return taken


async def test_vos_share_the_pilots_by_their_vo_share(vo_world: World, wms_config: WmsSettings) -> None:
    for vo, share in (("lhcb", 2), ("cta", 1)):
        status, answer = await vo_world.call("admin", "PUT", f"/vo-shares/{vo}", {"share": share})
        assert status == 200 and answer == {"vo": vo, "share": share}, answer
    await submit(vo_world, "bob", 40)
    await submit(vo_world, "eve", 40)
    await check_all(vo_world.db, wms_config)
    assert await vo_of_matches(vo_world, 30) == {"lhcb": 20, "cta": 10}
    _, shares = await vo_world.call("admin", "GET", "/vo-shares")
    assert {(s["vo"], s["share"], s["running"]) for s in shares} == {("lhcb", 2, 20), ("cta", 1, 10)}


async def test_groups_share_their_vos_pilots_by_their_group_share(vo_world: World, wms_config: WmsSettings) -> None:
    vo_world.tokens["dan"] = vo_world.api.token("dan", vo="lhcb", groups=("calib",),
                                                scopes=("jobs.read", "jobs.write"))
    status, answer = await vo_world.call("lhcbadmin", "PUT", "/job-shares/lhcb:calib", {"share": 3})
    assert status == 200, answer
    await submit(vo_world, "bob", 20)  # group lhcb:phys, share 1
    await submit(vo_world, "dan", 20)  # group lhcb:calib, share 3
    await submit(vo_world, "eve", 20)
    await check_all(vo_world.db, wms_config)
    assert await vo_of_matches(vo_world, 16) == {"lhcb": 8, "cta": 8}  # VO shares first: 1:1
    usage = {u["_id"]: u["running"] for u in await task_queues.all_group_usage(vo_world.db)}
    assert (usage["lhcb:calib"], usage["lhcb:phys"]) == (6, 2)


async def test_only_a_global_admin_sets_vo_shares(vo_world: World) -> None:
    for who in ("ctaadmin", "eve"):
        for vo in ("cta", "lhcb"):
            status, answer = await vo_world.call(who, "PUT", f"/vo-shares/{vo}", {"share": 5})
            assert status == 403, (who, vo, answer)
    status, answer = await vo_world.call("admin", "PUT", "/vo-shares/nope", {"share": 5})
    assert status == 404, answer
    _, seen_by_eve = await vo_world.call("eve", "GET", "/vo-shares")
    assert seen_by_eve == [{"vo": "cta", "share": 1.0, "running": 0}]
    _, vo = await vo_world.call("admin", "GET", "/vos/cta")
    assert vo["fair_share"] == 1.0


async def test_a_vos_job_ids_leave_no_gap_for_another_vos_jobs(vo_world: World) -> None:
    [first] = await submit(vo_world, "eve", 1)
    others = await submit(vo_world, "bob", 7)
    [second] = await submit(vo_world, "eve", 1)
    assert (first, second) == ("cta-1", "cta-2")
    assert others == [f"lhcb-{n}" for n in range(1, 8)]
    status, answer = await vo_world.call("bob", "GET", "/jobs/cta-1")
    assert status == 404, answer


async def test_a_vos_jobs_run_only_at_its_sites(vo_world: World, wms_config: WmsSettings) -> None:
    _, cta = await vo_world.call("admin", "GET", "/vos/cta")
    status, answer = await vo_world.call("admin", "PUT", "/vos/cta", {**cta, "sites": ["CTASITE"]})
    assert status == 200, answer
    status, answer = await vo_world.call("eve", "POST", "/jobs", {**JOB, "requirements": {"sites": ["SITE"]}})
    assert status == 400 and answer["message"] == "unknown site(s): SITE", answer  # lhcb's site, not cta's
    await submit(vo_world, "eve", 3)
    await submit(vo_world, "bob", 2)
    await check_all(vo_world.db, wms_config)
    at_site = await task_queues.eligible_queues(vo_world.db, "SITE", 1, 2048, [])  # what a factory there counts
    assert {q["group"] for q in at_site} == {"lhcb:phys"}
    assert await vo_of_matches(vo_world, 10, site="SITE") == {"lhcb": 2}
    assert await vo_of_matches(vo_world, 10, site="CTASITE") == {"cta": 3}


async def test_the_cli_sets_and_shows_vo_and_group_shares(vo_world: World) -> None:
    async def cairn(who: str, *args: str) -> tuple[int, str, str]:
        done = await run_cli(vo_world.api.url, vo_world.tokens[who], *args)
        return done.returncode, done.stdout, done.stderr

    code, out, err = await cairn("admin", "vo", "update", "lhcb", "--share", "2", "--json")
    assert code == 0 and json.loads(out) == {"vo": "lhcb", "share": 2.0}, err
    code, out, err = await cairn("admin", "vo", "add", "km3net", "--root", "/km3net", "--share", "3", "--json")
    assert code == 0 and json.loads(out)["fair_share"] == 3.0, err
    code, out, err = await cairn("admin", "vo", "shares", "--json")
    assert code == 0 and {(s["vo"], s["share"]) for s in json.loads(out)} == {
        ("lhcb", 2.0), ("cta", 1.0), ("km3net", 3.0)}, err
    code, _, err = await cairn("ctaadmin", "vo", "update", "cta", "--share", "9")
    assert code == 2 and "administrators of the installation" in err
    code, out, err = await cairn("ctaadmin", "job", "shares", "--set", "cta:phys", "4", "--json")
    assert code == 0 and json.loads(out) == [{"group": "cta:phys", "vo": "cta", "share": 4.0, "running": 0}], err
    code, _, err = await cairn("ctaadmin", "job", "shares", "--set", "lhcb:phys", "4")
    assert code == 2 and "group lhcb:phys does not exist" in err
    code, out, err = await cairn("eve", "vo", "shares")
    assert code == 0 and "cta" in out and "lhcb" not in out, err
