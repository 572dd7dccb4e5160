"""One requester's many requests do not make everyone else's wait behind them: within a priority,
requests are claimed by turn (`transfers.turns`), so a newcomer's request is served right after
what is being served, ahead of a heavy requester's backlog; two heavy requesters alternate; one
requester's requests keep their order; requests queued before turns existed keep theirs. Before,
claims went by age alone: alice's one copy waited behind all of bob's."""

from __future__ import annotations

from typing import Any

from tests.fixtures.authz import World
from transfers import request_claims as rc
from transfers import requests as rq

BACKLOG = 120


async def _register(world: World, who: str, directory: str, count: int) -> list[str]:
    lfns = [f"{directory}/f{i:04d}" for i in range(count)]
    async with world.client(who) as client:
        await client.mkdir(directory)
        result = await client.register_files([{"lfn": lfn, "size": 1, "adler32": "00020002",
                                               "replicas": [{"se": "DISK1"}]} for lfn in lfns])
    assert not result["failed"], result["failed"]
    return lfns


async def _ask(world: World, who: str, lfns: list[str]) -> dict[str, str]:
    status, answer = await world.call(who, "POST", "/requests/transfers", {"lfns": lfns, "dest_se": "DISK2"})
    assert status == 201 and not answer["failed"], answer
    return dict(answer["successful"])


async def _claimed(world: World, limit: int) -> list[dict[str, Any]]:
    return await rc.claim_many(world.db, "test-worker", kinds=["transfer"], lease_s=60, limit=limit)


async def test_a_newcomers_request_is_served_before_a_heavy_requesters_backlog(world: World) -> None:
    bobs = await _register(world, "bob", "/lhcb/pub/heavy", BACKLOG)
    alices = await _register(world, "alice", "/cta/mc/one", 1)
    bob_ids = await _ask(world, "bob", bobs)
    first = await _claimed(world, 10)  # the daemons are at bob's backlog
    assert [doc["_id"] for doc in first] == [bob_ids[lfn] for lfn in bobs[:10]]  # bob's in his order
    alice_ids = await _ask(world, "alice", alices)
    following = await _claimed(world, 10)
    assert following[0]["_id"] == alice_ids[alices[0]], [doc["requester"] for doc in following]
    assert [doc["_id"] for doc in following[1:]] == [bob_ids[lfn] for lfn in bobs[10:19]]


async def test_two_heavy_requesters_alternate(world: World) -> None:
    bobs = await _register(world, "bob", "/lhcb/pub/heavy", 40)
    alices = await _register(world, "alice", "/cta/mc/heavy", 40)
    await _ask(world, "bob", bobs)
    await _ask(world, "alice", alices)
    order = [doc["requester"] for doc in await _claimed(world, 20)]
    assert order == ["user:bob", "user:alice"] * 10, order


async def test_requests_queued_before_turns_existed_are_claimed_first_in_their_order(world: World) -> None:
    bobs = await _register(world, "bob", "/lhcb/pub/old", 3)
    alices = await _register(world, "alice", "/cta/mc/new", 2)
    bob_ids = await _ask(world, "bob", bobs)
    await world.db[rq.REQUESTS].update_many({"_id": {"$in": list(bob_ids.values())}}, {"$unset": {"turn": ""}})
    rc._TURNS_GIVEN.clear()  # a process started after the upgrade
    await _ask(world, "alice", alices)
    claimed = await _claimed(world, 5)
    assert [doc["_id"] for doc in claimed[:3]] == [bob_ids[lfn] for lfn in bobs]
    assert all(isinstance(doc["turn"], int) for doc in claimed)


async def test_quick_deletions_do_not_push_the_transfers_frontier_past_their_backlog(world: World) -> None:
    bobs = await _register(world, "bob", "/lhcb/pub/heavy", 30)
    alices = await _register(world, "alice", "/cta/mc/gone", 40)
    alice_copy = await _register(world, "alice", "/cta/mc/one", 1)
    await _ask(world, "bob", bobs)
    await _claimed(world, 5)
    status, answer = await world.call("alice", "POST", "/requests/deletions", {"lfns": alices, "se": "DISK1"})
    assert status == 201 and not answer["failed"], answer
    deletions = await rc.claim_many(world.db, "test-reaper", kinds=["delete"], lease_s=60, limit=40)
    assert len(deletions) == 40
    copy_id = (await _ask(world, "alice", alice_copy))[alice_copy[0]]
    assert (await _claimed(world, 1))[0]["_id"] == copy_id
