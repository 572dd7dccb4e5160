"""The transfer queue is shared by weight (`transfers.shares`, `transfers.turns`): VOs by their
transfer share whatever their number of users, the activities of a VO by their activity shares;
users of a VO still alternate. Before, every requester had an equal share: a VO with four busy
users took four times the claims of a VO with one, whatever an admin wanted."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tests.fixtures.authz import World
from tests.fixtures.cli import run_cli
from transfers import queueing
from transfers import request_claims as rc

# Each user queues its backlog as rules and productions do: in batches. A weight is fixed when its
# requests are queued, so a VO's first user's first batch took the whole VO's share: the claims
# are counted after WARM_UP, once every user has queued again knowing the others.
ROUNDS, BATCH, WARM_UP = 8, 10, 80


async def _queue(world: World, requester: str, vo: str | None, count: int, *, activity: str = "default",
                 tag: str = "") -> None:
    items = [{"lfn": f"/{vo or 'any'}/{requester.replace(':', '_')}{tag}/{activity}/f{i:04d}", "dest_se": "DISK2"}
             for i in range(count)]
    result = await queueing.submit(world.db, "transfer", items, requester=requester, vo=vo, activity=activity)
    assert not result["failed"], result["failed"]


async def _in_rounds(world: World, flows: list[tuple[str, str | None, str]]) -> None:
    """Every flow (requester, VO, activity) queues BATCH requests per round, ROUNDS rounds."""
    for round_ in range(ROUNDS):
        for requester, vo, activity in flows:
            await _queue(world, requester, vo, BATCH, activity=activity, tag=f"-{round_}")


async def _claimed(world: World, count: int, field: str = "vo", *, after: int = 0) -> Counter[str]:
    """What the next `count` claims (after `after` more) were for, by `field`."""
    got: Counter[str] = Counter()
    for n in range((after + count) // 20):
        claimed = await rc.claim_many(world.db, "w", kinds=["transfer"], lease_s=60, limit=20)
        if n * 20 >= after:
            got.update(doc.get(field) for doc in claimed)
    return got


async def _set(world: World, path: str, share: Any, who: str = "admin") -> tuple[int, Any]:
    return await world.call(who, "PUT", f"/transfer-shares/{path}", {"share": share})


LHCB_USERS = [("user:lhcb:bob", "lhcb", "default"), ("user:lhcb:carol", "lhcb", "default")]
CTA_USERS = [(f"user:cta:{name}", "cta", "default") for name in ("eve", "fay", "gil", "hal")]


async def test_vos_share_the_queue_by_their_transfer_shares_whatever_their_users(vo_world: World) -> None:
    assert await _set(vo_world, "vos/lhcb", 3) == (200, {"vo": "lhcb", "share": 3.0})
    await _in_rounds(vo_world, [*LHCB_USERS, *CTA_USERS])
    got = await _claimed(vo_world, 80, after=WARM_UP)
    assert 2.5 <= got["lhcb"] / got["cta"] <= 3.5, got  # 2 lhcb users against 4 of cta: 1:2 before


async def test_equal_vo_shares_serve_a_vo_of_one_user_as_much_as_a_vo_of_four(vo_world: World) -> None:
    await _in_rounds(vo_world, [LHCB_USERS[0], *CTA_USERS])
    got = await _claimed(vo_world, 80, after=WARM_UP)
    assert 0.8 <= got["lhcb"] / got["cta"] <= 1.25, got  # 1:4 before


async def test_users_of_one_vo_still_alternate(vo_world: World) -> None:
    await _set(vo_world, "vos/lhcb", 3)
    await _in_rounds(vo_world, [*LHCB_USERS, *CTA_USERS])
    got = await _claimed(vo_world, 80, field="requester", after=WARM_UP)
    assert 0.8 <= got["user:lhcb:bob"] / got["user:lhcb:carol"] <= 1.25, got
    assert min(got[name] for name, _, _ in CTA_USERS) >= 3, got  # cta's quarter is shared by its four


async def test_activities_share_their_vo_by_their_activity_shares(world: World) -> None:
    assert await _set(world, "activities/production", 3) == (200, {"activity": "production", "share": 3.0})
    await _queue(world, "user:bob", None, 60, activity="user")  # queued first: before, served first
    await _queue(world, "rule:r1", None, 60, activity="production")
    got = await _claimed(world, 40, field="activity")
    assert got == {"production": 30, "user": 10}, got


async def test_activity_labels_do_not_take_another_vos_share(vo_world: World) -> None:
    await _set(vo_world, "activities/production", 9)
    await _in_rounds(vo_world, [("user:lhcb:bob", "lhcb", "production"), ("user:cta:eve", "cta", "user")])
    got = await _claimed(vo_world, 60)
    assert got["lhcb"] == got["cta"] == 30, got


async def test_unlisted_activities_take_the_default_share(world: World) -> None:
    await _set(world, "activities/*", 0.5)
    await _set(world, "activities/production", 1)
    await _queue(world, "user:bob", None, 60, activity="whatever")
    await _queue(world, "user:alice", None, 60, activity="production")
    assert await _claimed(world, 60, field="activity") == {"production": 40, "whatever": 20}


async def test_a_changed_share_weighs_the_submissions_after_it(vo_world: World) -> None:
    await _queue(vo_world, "user:lhcb:bob", "lhcb", 20)
    await _queue(vo_world, "user:cta:eve", "cta", 20)
    assert await _claimed(vo_world, 40) == {"lhcb": 20, "cta": 20}
    await _set(vo_world, "vos/cta", 3)
    await _queue(vo_world, "user:lhcb:bob", "lhcb", 40, tag="-later")
    await _queue(vo_world, "user:cta:eve", "cta", 40, tag="-later")
    got = await _claimed(vo_world, 40)
    assert got == {"cta": 30, "lhcb": 10}, got


BAD_SHARES: list[Any] = [0, -1, float("nan"), float("inf"), 1e7, "3", True, [1], {"n": 1}, None]


async def test_bad_shares_are_refused_and_change_nothing(vo_world: World) -> None:
    before = await vo_world.snapshot()
    for bad in BAD_SHARES:
        for path in ("vos/lhcb", "activities/production", "activities/*"):
            status, answer = await _set(vo_world, path, bad)
            assert status == 400 and answer["code"] == "invalid_input", (path, bad, answer)
        status, answer = await vo_world.call("admin", "PUT", "/vos/lhcb", {"name": "lhcb", "roots": ["/lhcb"],
                                                                          "transfer_share": bad})
        assert status == 400, (bad, answer)
    for path in ("activities/a$b", "activities/" + "a" * 65):
        assert (await _set(vo_world, path, 2))[0] == 400, path
    assert (await _set(vo_world, "vos/nope", 2))[0] == 404
    assert await vo_world.snapshot() == before


async def test_only_a_global_admin_sets_transfer_shares(vo_world: World) -> None:
    before = await vo_world.snapshot()
    for who in ("bob", "lhcbadmin", "ctaadmin"):
        for path in ("vos/lhcb", "vos/cta", "activities/production"):
            status, answer = await _set(vo_world, path, 5, who=who)
            assert status == 403, (who, path, answer)
        status, _ = await vo_world.call(who, "DELETE", "/transfer-shares/activities/production")
        assert status == 403, who
    assert await vo_world.snapshot() == before
    status, seen = await vo_world.call("eve", "GET", "/transfer-shares")
    assert status == 200 and seen["vos"] == [{"vo": "cta", "share": 1.0, "backlogged": 0}], seen


async def test_the_cli_sets_and_shows_transfer_shares(vo_world: World) -> None:
    async def cairn(*args: str) -> Any:
        done = await run_cli(vo_world.api.url, vo_world.tokens["admin"], *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert await cairn("vo", "update", "lhcb", "--transfer-share", "2") == {"vo": "lhcb", "transfer_share": 2.0}
    assert (await cairn("vo", "show", "lhcb"))["transfer_share"] == 2.0
    await _queue(vo_world, "user:lhcb:bob", "lhcb", 5)
    shown = await cairn("transfers", "shares", "--activity", "production=3", "--activity", "*=0.5")
    assert shown == {"vos": [{"vo": "cta", "share": 1.0, "backlogged": 0},
                             {"vo": "lhcb", "share": 2.0, "backlogged": 1}],
                     "activities": {"production": 3.0}, "default_activity_share": 0.5}
    shown = await cairn("transfers", "shares", "--forget-activity", "production")
    assert shown["activities"] == {}


async def test_a_clock_stored_before_activities_keeps_its_requesters_order(world: World) -> None:
    await _queue(world, "user:bob", None, 30, tag="-old")
    clock = await world.db["request_turns"].find_one_and_delete({"_id": "transfer|user:bob|*"})
    await world.db["request_turns"].insert_one({"_id": "transfer|user:bob", "turn": clock["turn"]})  # as stored
    await _queue(world, "user:bob", None, 5, activity="express", tag="-new")
    claimed = await rc.claim_many(world.db, "w", kinds=["transfer"], lease_s=60, limit=35)
    assert [doc["lfn"].split("/")[2] for doc in claimed] == ["user_bob-old"] * 30 + ["user_bob-new"] * 5


async def test_activity_names_without_a_share_do_not_multiply_a_users_flows(vo_world: World) -> None:
    """An activity with no share of its own is the default's flow: a user naming a new activity
    per submission neither stores a clock each time nor outweighs the other users of its VO."""
    for n in range(40):
        await _queue(vo_world, "user:lhcb:bob", "lhcb", 5, activity=f"a{n}")
    await _queue(vo_world, "user:lhcb:carol", "lhcb", 100)
    clocks = await vo_world.db["request_turns"].count_documents({"_id": {"$regex": r"^transfer\|user:lhcb:bob\|"}})
    assert clocks == 1
    got = await _claimed(vo_world, 100, field="requester")
    # As if bob had named one activity: carol, arriving second, is served every other turn of
    # bob's (1 claim in 100 when each name was a flow of its own).
    assert got["user:lhcb:carol"] >= 30, got
