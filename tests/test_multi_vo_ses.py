"""A shared SE under several VOs (issue 14), on tests.fixtures.multi_vo: DISK1 serves lhcb under
its path /lhcb and cta under /cta. Each VO's files land under its path there, a replica URL
outside the caller's VO path is refused, and a VO's admin switches the SE for its VO only."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalogue.storage_elements import Protocol, StorageElement, replica_url
from kernel.errors import Forbidden
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import store
from rules.evaluator import RuleEvaluator
from tests.fixtures.authz import ALICES, SHARED, World
from tests.fixtures.cli import run_cli
from tests.fixtures.rules import rule_settings
from tests.fixtures.transfers import se_root
from transfers.auditor import Auditor


def base(world: World) -> str:
    return world.ses[0].protocols[0].base_url()  # DISK1


async def upload(world: World, who: str, tmp_path: Path, lfn: str, se: str = "DISK1") -> str:
    local = tmp_path / f"{who}.dat"
    local.write_bytes(b"events of " + lfn.encode())
    async with world.client(who) as client:
        [outcome] = await client.upload([local], lfn, se)
    assert outcome.status == "uploaded", outcome
    return outcome.url or ""


async def test_an_upload_to_a_shared_se_lands_under_the_vos_path(vo_world: World, tmp_path: Path) -> None:
    await upload(vo_world, "eve", tmp_path, "/cta/mc/up.dat")
    disk1 = se_root(vo_world.ses[0])
    assert (disk1 / "cta/cta/mc/up.dat").read_bytes() == b"events of /cta/mc/up.dat"
    assert not (disk1 / "cta/mc/up.dat").exists()
    status, answer = await vo_world.call("eve", "GET", "/files", params={"lfn": "/cta/mc/up.dat"})
    assert status == 200 and answer["replicas"][0]["url"] == base(vo_world) + "/cta/cta/mc/up.dat", answer
    _, bobs = await vo_world.call("bob", "GET", "/files", params={"lfn": SHARED})
    assert {r["se"]: r["url"] for r in bobs["replicas"]}["DISK1"] == base(vo_world) + "/lhcb" + SHARED


@pytest.mark.parametrize("url_path", ["/cta/mc/y.dat", "/lhcb/cta/mc/y.dat", "/cta/lhcb/cta/mc/y.dat"])
async def test_a_replica_url_outside_the_callers_vo_path_is_refused(vo_world: World, url_path: str) -> None:
    item = {"lfn": "/cta/mc/y.dat", "size": 1, "adler32": "00020002",
            "replicas": [{"se": "DISK1", "url": base(vo_world) + url_path}]}
    status, answer = await vo_world.call("eve", "POST", "/files/register", {"files": [item]})
    assert status == 400 and "refused" in answer["message"] and "/cta/cta/mc/y.dat" in answer["message"], answer
    status, _ = await vo_world.call("eve", "GET", "/files", params={"lfn": "/cta/mc/y.dat"})
    assert status == 404
    item["replicas"] = [{"se": "DISK1", "url": base(vo_world) + "/cta/cta/mc/y.dat"}]
    status, answer = await vo_world.call("eve", "POST", "/files/register", {"files": [item]})
    assert status == 200 and not answer["failed"], answer


async def test_a_vo_sees_only_its_own_path_and_switches_on_a_shared_se(vo_world: World) -> None:
    _, seen_by_eve = await vo_world.call("eve", "GET", "/ses/DISK1")
    _, seen_by_admin = await vo_world.call("admin", "GET", "/ses/DISK1")
    assert seen_by_eve["vo_paths"] == {"/cta": "/cta"}
    assert seen_by_admin["vo_paths"] == {"/cta": "/cta", "/lhcb": "/lhcb"}


async def test_a_site_shows_a_vo_only_its_own_ses_there(vo_world: World) -> None:
    """GET /sites/{name} lists the site's SEs as GET /ses does: another VO's are left out, a shared
    one shows the caller's VO's path only (it listed every SE at the site, every VO's paths)."""
    for who, expected in (("eve", ["DISK1", "DISK3"]), ("bob", ["DISK1", "DISK2"]),
                          ("admin", ["DISK1", "DISK2", "DISK3"])):
        status, site = await vo_world.call(who, "GET", "/sites/SITE")
        assert status == 200 and sorted(se["name"] for se in site["ses"]) == expected, (who, site)
    _, site = await vo_world.call("eve", "GET", "/sites/SITE")
    [shared] = [se for se in site["ses"] if se["name"] == "DISK1"]
    assert list(shared["vo_paths"]) == ["/cta"], shared


async def test_a_vo_admin_switches_an_se_for_its_own_vo_only(vo_world: World, tmp_path: Path) -> None:
    status, answer = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/ses/DISK1", {"write_enabled": False})
    assert status == 200 and answer["ses"]["DISK1"]["write_enabled"] is False, answer
    with pytest.raises(Forbidden, match="switched off for writing"):
        await upload(vo_world, "eve", tmp_path, "/cta/mc/off.dat")
    assert not (se_root(vo_world.ses[0]) / "cta/cta/mc/off.dat").exists()
    await upload(vo_world, "bob", tmp_path, "/lhcb/pub/on.dat")  # lhcb's writes go on
    _, disk1 = await vo_world.call("bob", "GET", "/ses/DISK1")
    assert disk1["write_enabled"] is True and disk1["vo_switched_off"] == {}
    status, answer = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/ses/DISK1", {"write_enabled": True})
    assert status == 200
    await upload(vo_world, "eve", tmp_path, "/cta/mc/on.dat")


async def test_a_replication_to_an_se_the_vo_switched_off_is_refused_when_asked(
    vo_world: World, tmp_path: Path,
) -> None:
    await upload(vo_world, "eve", tmp_path, "/cta/mc/tocopy.dat", se="DISK3")
    status, _ = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/ses/DISK1", {"write_enabled": False})
    assert status == 200
    _, before = await vo_world.call("eve", "GET", "/requests", params={"kind": "transfer"})
    status, answer = await vo_world.call("eve", "POST", "/requests/transfers",
                                         {"lfns": ["/cta/mc/tocopy.dat"], "dest_se": "DISK1"})
    assert status == 400 and "switched off for writing" in answer["message"], answer
    _, after = await vo_world.call("eve", "GET", "/requests", params={"kind": "transfer"})
    assert after == before  # nothing queued
    await vo_world.call("ctaadmin", "PATCH", "/vos/cta/ses/DISK1", {"write_enabled": True})
    status, answer = await vo_world.call("eve", "POST", "/requests/transfers",
                                         {"lfns": ["/cta/mc/tocopy.dat"], "dest_se": "DISK1"})
    assert status == 201, answer


@pytest.mark.parametrize(("who", "path", "status"), [
    ("ctaadmin", "/vos/lhcb/ses/DISK1", 404),  # another VO: as if missing
    ("ctaadmin", "/vos/cta/ses/DISK2", 404),  # an SE cta does not use
    ("eve", "/vos/cta/ses/DISK1", 403),  # a member, not an admin
    ("lhcbadmin", "/ses/DISK1", 403),  # the SE's own switch is the installation's
])
async def test_a_vo_admin_cannot_switch_what_is_not_its_vos(vo_world: World, who: str, path: str, status: int) -> None:
    before = await vo_world.snapshot()
    got, answer = await vo_world.call(who, "PATCH", path, {"write_enabled": False})
    assert got == status, answer
    assert await vo_world.snapshot() == before


async def test_a_global_admins_se_switch_stays_global(vo_world: World, tmp_path: Path) -> None:
    status, answer = await vo_world.call("admin", "PATCH", "/ses/DISK1", {"write_enabled": False})
    assert status == 200, answer
    for who, lfn in (("eve", "/cta/mc/g.dat"), ("bob", "/lhcb/pub/g.dat")):
        with pytest.raises(Forbidden, match="switched off for writing"):
            await upload(vo_world, who, tmp_path, lfn)


async def test_cli_vo_se_switches_the_vos_files_on_an_se(vo_world: World) -> None:
    done = await run_cli(vo_world.api.url, vo_world.tokens["ctaadmin"], "vo", "se", "cta", "DISK1", "--no-read",
                         "--json")
    assert done.returncode == 0, done.stderr
    _, vo = await vo_world.call("ctaadmin", "GET", "/vos/cta")
    assert vo["ses"]["DISK1"]["read_enabled"] is False and vo["ses"]["DISK1"]["write_enabled"] is True
    done = await run_cli(vo_world.api.url, vo_world.tokens["ctaadmin"], "vo", "se", "lhcb", "DISK1", "--no-read")
    assert done.returncode == 2 and "does not exist" in done.stderr


async def test_a_vos_quota_on_a_shared_se_holds_when_its_rules_grow(vo_world: World, settings: Settings) -> None:
    for who, did, lfn in (("eve", "cta:grow", ALICES), ("bob", "lhcb:grow", SHARED)):
        status, answer = await vo_world.call(who, "POST", "/dids", {"did": did, "type": "dataset"})
        assert status == 201, answer
        status, rule = await vo_world.call(who, "POST", "/rules", {"did": did, "copies": 1, "expression": "DISK1"})
        assert status == 201, rule  # empty: within cta's quota of CTA_QUOTA bytes on DISK1
        status, answer = await vo_world.call(who, "POST", "/dids/attach", {"did": did, "lfns": [lfn]})
        assert status == 200, answer
    await RuleEvaluator(rule_settings(settings), vo_world.db).run(max_cycles=1)
    placed = {lock["lfn"] for lock in await vo_world.db[rule_locks.LOCKS].find({"se": "DISK1"}).to_list()}
    assert ALICES not in placed and SHARED in placed  # cta's file exceeds cta's quota; lhcb has none there
    cta_rule = await vo_world.db[store.RULES].find_one({"did": "cta:grow"})
    assert cta_rule is not None and cta_rule["unplaced"] == 1 and "within quota" in cta_rule["error"], cta_rule


async def test_an_audit_of_an_se_with_vo_paths_fails_rather_than_call_files_dark(
    vo_world: World, settings: Settings,
) -> None:
    async with vo_world.client("admin") as admin:
        queued = await admin.queue_audit("DISK1")
        await Auditor(settings, vo_world.db).run(max_cycles=1)
        run = await admin.audit_run(str(queued["id"]))
    assert run["state"] == "failed" and "not supported yet" in str(run["error"]), run
    assert not await vo_world.db["audit_entries"].count_documents({})


def test_a_files_place_follows_the_longest_vo_root_above_it() -> None:
    se = StorageElement(name="D", site="S", protocols=[Protocol(scheme="file", prefix="/d")],
                        vo_paths={"/": "/local", "/cta": "/", "/lhcb": "/lhcb"})
    assert [replica_url(se.protocols[0], lfn) for lfn in ("/home/x", "/cta/x", "/lhcb/x", "/lhcbx/y")] == [
        "file:///d/local/home/x", "file:///d/cta/x", "file:///d/lhcb/lhcb/x", "file:///d/local/lhcbx/y"]
