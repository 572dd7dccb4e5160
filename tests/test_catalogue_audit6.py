"""Regression tests of the sixth catalogue audit: routes that answered a hidden file differently
from a missing one, or changed it (tests.fixtures.authz: carol is in bob's dataset's group but
cannot reach /lhcb/data)."""

from __future__ import annotations

from tests.fixtures.authz import DATASET, MISSING, PRIVATE, World, same_answer


async def test_detach_answers_a_hidden_file_like_one_not_attached_and_keeps_it(world: World) -> None:
    hidden = await world.call("carol", "POST", "/dids/detach", {"did": DATASET, "lfns": [PRIVATE]})
    missing = await world.call("carol", "POST", "/dids/detach", {"did": DATASET, "lfns": [MISSING]})
    assert hidden[0] == 200 and same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)
    _, bobs = await world.call("bob", "GET", "/dids/contents", params={"did": DATASET})
    assert PRIVATE in [m["lfn"] for m in bobs["members"]]
    _, did = await world.call("bob", "GET", "/dids", params={"did": DATASET})
    assert did["files"] == 2
    detached = await world.call("bob", "POST", "/dids/detach", {"did": DATASET, "lfns": [PRIVATE]})
    assert detached == (200, {"successful": {PRIVATE: {"detached": True}}, "failed": {}})
