"""An identical open request asked for by a second user is shared, not handed over: the second
user sees it, follows it by their own submission and withdraws from it alone, and the owner's
cancel no longer cancels what the second user was told is queued (it passes to them); the request
is cancelled when nobody who asked for it is left. Before, the second user got the owner's request
id, which they could see neither directly nor by their submission, and the owner's cancel
cancelled it under them."""

from __future__ import annotations

from typing import Any

from tests.fixtures.authz import SHARED, World


async def _state(world: World, rid: str) -> tuple[str, str, list[str]]:
    doc = await world.db["transfer_requests"].find_one({"_id": rid})
    assert doc is not None
    return doc["state"], doc["requester"], doc.get("joined", [])


async def _ask(world: World, who: str) -> dict[str, Any]:
    status, answer = await world.call(who, "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    assert status == 201 and SHARED in answer["successful"], answer
    return dict(answer)


async def test_a_request_two_users_asked_for_is_theirs_until_both_cancel(world: World) -> None:
    bobs, carols = await _ask(world, "bob"), await _ask(world, "carol")
    rid = bobs["successful"][SHARED]
    assert carols["successful"][SHARED] == rid
    assert await _state(world, rid) == ("queued", "user:bob", ["user:carol"])
    status, seen = await world.call("carol", "GET", f"/requests/{rid}")
    assert status == 200 and seen["_id"] == rid, seen
    status, progress = await world.call("carol", "GET", f"/submissions/{carols['submission']}")
    assert status == 200 and progress["states"]["total"] == 1, progress
    status, listed = await world.call("carol", "GET", "/requests", params={"submission": carols["submission"]})
    assert status == 200 and [r["_id"] for r in listed] == [rid], listed

    status, answer = await world.call("bob", "POST", "/requests/cancel", {"submission": bobs["submission"]})
    assert status == 200 and answer["cancelled"] == 1, answer
    assert await _state(world, rid) == ("queued", "user:carol", [])  # carol's now, still queued
    status, _ = await world.call("bob", "GET", f"/requests/{rid}")
    assert status == 404

    await _ask(world, "bob")  # asks again: joins carol's
    status, answer = await world.call("carol", "POST", "/requests/cancel", {"ids": [rid]})
    assert status == 200 and answer["cancelled"] == 1, answer
    assert await _state(world, rid) == ("queued", "user:bob", [])
    status, answer = await world.call("bob", "POST", "/requests/cancel", {"ids": [rid]})
    assert status == 200 and answer["cancelled"] == 1, answer
    assert (await _state(world, rid))[0] == "cancelled"


async def test_a_user_who_joined_withdraws_alone(world: World) -> None:
    bobs, carols = await _ask(world, "bob"), await _ask(world, "carol")
    rid = bobs["successful"][SHARED]
    status, answer = await world.call("carol", "POST", "/requests/cancel", {"submission": carols["submission"]})
    assert status == 200 and answer["cancelled"] == 1, answer
    assert await _state(world, rid) == ("queued", "user:bob", [])
    status, _ = await world.call("carol", "GET", f"/requests/{rid}")
    assert status == 404
