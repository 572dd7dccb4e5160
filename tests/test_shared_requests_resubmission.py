"""A user submitting the same request again and again, while another user's identical request is
open, joins it once and keeps a bounded number of their submissions on it. Before, each
re-submission added its submission to the owner's request document, until the request's global
bound (1000) was reached: from then on nobody else could join it."""

from __future__ import annotations

from tests.fixtures.authz import SHARED, World
from transfers import queueing
from transfers.queueing import MAX_SUBMISSIONS_PER_JOINER

ROUNDS = 3 * MAX_SUBMISSIONS_PER_JOINER


async def test_re_submissions_of_a_joined_request_are_bounded_per_requester(world: World) -> None:
    status, bobs = await world.call("bob", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    assert status == 201, bobs
    rid = bobs["successful"][SHARED]
    for _ in range(ROUNDS):
        status, carols = await world.call("carol", "POST", "/requests/transfers",
                                          {"lfns": [SHARED], "dest_se": "DISK2"})
        assert status == 201 and carols["successful"] == {SHARED: rid}, carols  # still hers to follow
    doc = await world.db["transfer_requests"].find_one({"_id": rid})
    assert doc is not None and doc["joined"] == ["user:carol"]
    assert len(doc["joined_submissions"]) <= MAX_SUBMISSIONS_PER_JOINER  # before: one per re-submission
    other = await queueing.submit_transfers(world.db, [{"lfn": SHARED, "dest_se": "DISK2"}], requester="user:erin")
    assert other["successful"] == {SHARED: rid}, other
    status, listed = await world.call("carol", "GET", f"/requests/{rid}")
    assert status == 200, listed


async def test_a_requester_at_its_bound_who_withdrew_joins_again(world: World) -> None:
    status, bobs = await world.call("bob", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    rid = bobs["successful"][SHARED]
    for _ in range(MAX_SUBMISSIONS_PER_JOINER):
        await world.call("carol", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    status, answer = await world.call("carol", "POST", "/requests/cancel", {"ids": [rid]})
    assert status == 200 and answer["cancelled"] == 1, answer  # withdrawn: bob's request goes on
    status, carols = await world.call("carol", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    assert status == 201 and carols["successful"] == {SHARED: rid}, carols
    doc = await world.db["transfer_requests"].find_one({"_id": rid})
    assert doc is not None and doc["joined"] == ["user:carol"]
