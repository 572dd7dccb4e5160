"""A VO's rules and subscriptions stay within the VO: copies only on the VO's SEs (at creation,
and in the evaluator and repairer that place them later) and not where the VO switched writing
off; a VO's administrator acts only for accounts of the VO. Before, a rule whose expression also
named another VO's SE was accepted for the VO's own SE and then placed by the evaluator on the
other (bytes written there, outside the VO's quotas), and a VO's administrator could make rules
and subscriptions charged to another VO's accounts."""

from __future__ import annotations

from kernel.settings import Settings
from rules import locks as rule_locks
from rules.evaluator import RuleEvaluator
from tests.fixtures.authz import ALICES, World
from tests.fixtures.rules import rule_daemons, rule_settings, run_until
from tests.fixtures.transfers import se_root


async def _locks(world: World, rule_id: str) -> list[tuple[str, str]]:
    return [(lock["se"], lock["state"]) async for lock in world.db[rule_locks.LOCKS].find({"rule": rule_id})]


async def test_a_rule_places_its_copies_only_on_its_vos_ses(vo_world: World, settings: Settings) -> None:
    # cta uses DISK1 (a quota smaller than any file) and DISK3; DISK2 is lhcb's
    status, rule = await vo_world.call("eve", "POST", "/rules", {"did": ALICES, "copies": 1,
                                                                 "expression": "DISK2|DISK3"})
    assert status == 201, rule

    async def ok() -> bool:
        return await _locks(vo_world, rule["id"]) == [("DISK3", "ok")]

    await run_until(ok, rule_daemons(rule_settings(settings), vo_world.db), timeout_s=40)
    assert not await vo_world.db["transfer_requests"].find_one({"dest_se": "DISK2"})
    # its transfer is the VO's: cta's administrator sees it, lhcb's does not
    asked = await vo_world.db["transfer_requests"].find({"requester": f"rule:{rule['id']}"}).to_list()
    assert [r.get("vo") for r in asked] == ["cta"]
    for admin, seen in (("ctaadmin", [asked[0]["_id"]]), ("lhcbadmin", [])):
        status, listed = await vo_world.call(admin, "GET", "/requests")
        assert status == 200 and [r["_id"] for r in listed] == seen, (admin, listed)
    assert not [p for p in se_root(vo_world.ses[1]).rglob("*") if p.is_file() and "cta" in str(p)]
    status, refused = await vo_world.call("eve", "POST", "/rules", {"did": ALICES, "copies": 1, "expression": "DISK2"})
    assert status == 400 and "matches no storage element" in refused["message"], refused


async def test_a_rule_places_no_copy_where_its_vo_switched_writing_off(vo_world: World, settings: Settings) -> None:
    status, switched = await vo_world.call("ctaadmin", "PATCH", "/vos/cta/ses/DISK3", {"write_enabled": False})
    assert status == 200, switched
    status, rule = await vo_world.call("eve", "POST", "/rules", {"did": ALICES, "copies": 1, "expression": "DISK3"})
    assert status == 201, rule
    await RuleEvaluator(rule_settings(settings), vo_world.db).run(max_cycles=1)
    assert await _locks(vo_world, rule["id"]) == []
    stored = await vo_world.db["rules"].find_one({"_id": rule["id"]})
    assert stored is not None and stored["unplaced"] == 1


async def test_a_vo_administrator_acts_only_for_accounts_of_the_vo(vo_world: World) -> None:
    rule = {"did": ALICES, "copies": 1, "expression": "DISK3"}
    status, answer = await vo_world.call("ctaadmin", "POST", "/rules", {**rule, "account": "lhcb:bob"})
    assert status == 403 and "is not of VO cta" in answer["message"], answer
    status, answer = await vo_world.call("ctaadmin", "POST", "/subscriptions",
                                         {"name": "s1", "account": "lhcb:bob",
                                          "rule": {"copies": 1, "expression": "DISK3"}})
    assert status == 403 and "is not of VO cta" in answer["message"], answer
    assert await vo_world.db["rules"].count_documents({}) == 0
    assert await vo_world.db["subscriptions"].count_documents({}) == 0
    status, made = await vo_world.call("ctaadmin", "POST", "/rules", {**rule, "account": "cta:eve"})
    assert status == 201 and made["account"] == "cta:eve", made
    status, made = await vo_world.call("admin", "POST", "/rules", {**rule, "account": "lhcb:bob"})
    assert status == 201, made  # a global administrator acts for any account
