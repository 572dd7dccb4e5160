"""An identical open request asked for by a second user is shared, not handed over: the second
user sees it, follows it by their own submission and withdraws from it alone, and the owner's
cancel no longer cancels what the second user was told is queued (it passes to them); the request
is cancelled when nobody who asked for it is left. Before, the second user got the owner's request
id, which they could see neither directly nor by their submission, and the owner's cancel
cancelled it under them. A done stage request's pin is released the same way: by the last of
those who asked for it."""

from __future__ import annotations

import zlib
from typing import Any

from tests.fixtures.authz import SHARED, World
from tests.fixtures.transfers import fast_settings, run_until_drained, write_bytes
from transfers.endpoints import tape_endpoint
from transfers.queueing import JOINS_FULL, MAX_JOINED_SUBMISSIONS
from transfers.stager import Stager

ON_TAPE = "/lhcb/pub/t.root"


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


async def _staged_for_bob_and_carol(world: World) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """ON_TAPE (bob's, carol may read it) staged by one request that bob made and carol joined."""
    tape, data = world.ses[2], b"tape bytes" * 100
    write_bytes(tape, ON_TAPE, data)
    async with world.client("bob") as bob:
        result = await bob.register_files([{"lfn": ON_TAPE, "size": len(data), "adler32": f"{zlib.adler32(data):08x}",
                                            "mode": 0o640, "replicas": [{"se": tape.name}]}])
        assert not result["failed"], result
    answers = []
    for who in ("bob", "carol"):
        status, answer = await world.call(who, "POST", "/requests/stages", {"lfns": [ON_TAPE], "se": tape.name})
        assert status == 201, answer
        answers.append(answer)
    await run_until_drained(world.db, Stager(fast_settings(world.api.settings), world.db), timeout_s=30)
    return answers[0]["successful"][ON_TAPE], answers[0], answers[1]


async def _online_after_the_stager(world: World) -> bool:
    stager = Stager(fast_settings(world.api.settings), world.db)
    for _ in range(3):
        await stager.run_once()
    plugin, url = tape_endpoint(world.ses[2], ON_TAPE, credentials={}, registered_url=None)
    return await plugin.is_online(url)


async def test_a_shared_stage_pin_is_released_only_by_the_last_who_asked_for_it(world: World) -> None:
    rid, bobs, carols = await _staged_for_bob_and_carol(world)
    assert await _state(world, rid) == ("done", "user:bob", ["user:carol"])
    status, answer = await world.call("carol", "POST", "/requests/release", {"submission": carols["submission"]})
    assert status == 200 and answer["release_asked"] == 1, answer  # carol withdraws: bob still relies on it
    assert await _state(world, rid) == ("done", "user:bob", [])
    assert await _online_after_the_stager(world)
    status, answer = await world.call("bob", "POST", "/requests/release", {"submission": bobs["submission"]})
    assert status == 200 and answer["release_asked"] == 1, answer
    assert not await _online_after_the_stager(world)


async def test_submissions_joining_one_request_are_bounded(world: World) -> None:
    """Each submission that joined another user's request was kept in that request's document: a
    joiner submitting again and again grew it without bound (every join slower than the last,
    towards the largest document the database stores). The 1001st is refused; the request and
    the joined submissions go on."""
    rid = (await _ask(world, "bob"))["successful"][SHARED]
    first = await _ask(world, "carol")
    assert first["successful"][SHARED] == rid
    more = [f"s{i}" for i in range(MAX_JOINED_SUBMISSIONS - 2)]  # as if carol had submitted 998 more times
    await world.db["transfer_requests"].update_one({"_id": rid}, {"$push": {"joined_submissions": {"$each": more}}})
    last = await _ask(world, "carol")
    assert last["successful"][SHARED] == rid
    status, refused = await world.call("carol", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    assert status == 201 and refused["failed"] == {SHARED: JOINS_FULL}, refused
    doc = await world.db["transfer_requests"].find_one({"_id": rid})
    assert doc is not None and len(doc["joined_submissions"]) == MAX_JOINED_SUBMISSIONS
    assert doc["state"] in ("queued", "submitted", "active") and doc["requester"] == "user:bob"
    status, seen = await world.call("carol", "GET", f"/requests/{rid}")
    assert status == 200, seen
