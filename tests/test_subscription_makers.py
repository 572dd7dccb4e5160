"""A subscription acts as its maker as the VO's registry has them at each application (seventh
fixes): a maker removed from the VO's members gets no rules on new datasets (it went on getting
them, with the rights stored when subscribing), and a subscription stored before the registry's
roles were looked up again keeps no `admin` the registry took back."""

from __future__ import annotations

from typing import Any

from catalogue.vos import registry
from rules import subscriptions
from tests.fixtures.authz import PRIVATE, SHARED, USER_SCOPES, World

GRAB = {"copies": 1, "expression": "DISK2"}


async def _new_dataset(world: World, name: str, lfn: str) -> str:
    """bob's new dataset holding `lfn`, handed to the subscriptions as the subscriber would."""
    did = f"lhcb:{name}"
    status, _ = await world.call("bob", "POST", "/dids", {"did": did, "type": "dataset"})
    assert status in (200, 201)
    status, answer = await world.call("bob", "POST", "/dids/attach", {"did": did, "lfns": [lfn]})
    assert status == 200, answer
    await registry(world.db, fresh=True)
    await subscriptions.apply_to_new(world.db, [did])
    return did


async def _members(world: World, body: dict[str, Any]) -> None:
    status, answer = await world.call("admin", "PATCH", "/vos/lhcb/members", body)
    assert status == 200, answer


async def _rules_on(world: World, did: str) -> int:
    return await world.db["rules"].count_documents({"did": did})


async def test_a_maker_removed_from_the_vo_gets_no_more_rules(vo_world: World) -> None:
    await _members(vo_world, {"add": ["carol", "bob"]})
    status, made = await vo_world.call("carol", "POST", "/subscriptions",
                                       {"name": "mine", "filter": {"scopes": ["lhcb"]}, "rule": GRAB})
    assert status == 201, made
    assert await _rules_on(vo_world, await _new_dataset(vo_world, "bob.n1", SHARED)) == 1  # carol reads it
    await _members(vo_world, {"remove": ["carol"]})
    assert await _rules_on(vo_world, await _new_dataset(vo_world, "bob.n2", SHARED)) == 0
    status, shown = await vo_world.call("carol", "GET", "/subscriptions/mine")
    assert status == 200 and "no longer a member of VO lhcb" in shown["inactive"], shown
    await _members(vo_world, {"add": ["carol"]})
    assert await _rules_on(vo_world, await _new_dataset(vo_world, "bob.n3", SHARED)) == 1
    status, shown = await vo_world.call("lhcbadmin", "GET", "/subscriptions/mine")
    assert status == 200 and shown["inactive"] is None, shown


async def test_an_old_subscription_keeps_no_admin_the_registry_took_back(vo_world: World) -> None:
    vo_world.tokens["dave"] = vo_world.api.token("dave", vo="lhcb", groups=("other",), scopes=USER_SCOPES)
    await _members(vo_world, {"add": ["dave"], "admins": True})
    status, made = await vo_world.call("dave", "POST", "/subscriptions",
                                       {"name": "grab", "filter": {"scopes": ["lhcb"]}, "rule": GRAB})
    assert status == 201, made
    # As stored before the roles were looked up at each application: `admin` kept, no marker.
    await vo_world.db["subscriptions"].update_one(
        {"name": "grab"}, {"$set": {"scopes": sorted({*made["scopes"], "admin"})}, "$unset": {"member_listed": ""}})
    assert await _rules_on(vo_world, await _new_dataset(vo_world, "bob.a1", PRIVATE)) == 1  # an admin still
    await _members(vo_world, {"remove": ["dave"], "admins": True})
    assert await _rules_on(vo_world, await _new_dataset(vo_world, "bob.a2", PRIVATE)) == 0
    stored = await vo_world.db["subscriptions"].find_one({"name": "grab"})
    assert stored is not None and "needs r on each of its files" in str(stored["errors"]), stored
