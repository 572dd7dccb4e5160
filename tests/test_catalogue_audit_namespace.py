"""The namespace routes found leaking by the catalogue audit: a move that carries another VO's
nested root away, moves and removals that tell a hidden entry from a missing one, and stat (and
the portal's file page) showing where the bytes of a file the caller may not read are."""

from __future__ import annotations

from tests.fixtures.authz import ALICES, MISSING, PRIVATE, SHARED, World, register_with_bytes, same_answer
from tests.fixtures.portal import PortalFactory

UNREADABLE = "/lhcb/pub/own.root"  # bob's, 0600 in the directory carol may enter


async def test_moving_onto_a_hidden_entry_answers_as_onto_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/namespace/move", {"source": ALICES, "destination": PRIVATE})
    missing = await world.call("alice", "POST", "/namespace/move", {"source": ALICES, "destination": MISSING})
    no_dir = await world.call("alice", "POST", "/namespace/move", {"source": ALICES, "destination": "/lhcb/nodir/x"})
    assert same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)
    assert same_answer(no_dir, missing, "/lhcb/nodir/x", MISSING), (no_dir, missing)


async def test_moving_onto_another_vos_entry_answers_as_onto_a_missing_one(vo_world: World) -> None:
    async with vo_world.client("eve") as eve:
        await eve.mkdir("/cta/mine")
    source = "/cta/mine"
    hidden = await vo_world.call("eve", "POST", "/namespace/move", {"source": source, "destination": PRIVATE})
    missing = await vo_world.call("eve", "POST", "/namespace/move", {"source": source, "destination": MISSING})
    no_dir = await vo_world.call("eve", "POST", "/namespace/move", {"source": source, "destination": "/lhcb/nodir/x"})
    assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)
    assert same_answer(no_dir, missing, "/lhcb/nodir/x", MISSING), (no_dir, missing)


async def test_moving_a_hidden_entry_answers_as_moving_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/namespace/move", {"source": PRIVATE, "destination": "/cta/mc/b.root"})
    missing = await world.call("alice", "POST", "/namespace/move", {"source": MISSING, "destination": "/cta/mc/b.root"})
    assert same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)


async def test_removing_a_hidden_entry_answers_as_removing_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/namespace/remove", {"path": PRIVATE})
    missing = await world.call("alice", "POST", "/namespace/remove", {"path": MISSING})
    assert same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)


async def test_removing_another_vos_entry_answers_as_removing_a_missing_one(vo_world: World) -> None:
    hidden = await vo_world.call("eve", "POST", "/namespace/remove", {"path": PRIVATE})
    missing = await vo_world.call("eve", "POST", "/namespace/remove", {"path": MISSING})
    assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)


async def test_stat_shows_replicas_only_to_a_reader_of_the_file(world: World) -> None:
    async with world.client("bob") as bob:
        await register_with_bytes(bob, world.ses[:1], [(UNREADABLE, 0o600)])
    unreadable = await world.call("carol", "GET", "/namespace/stat", params={"path": UNREADABLE})
    assert unreadable[0] == 200 and "replicas" not in unreadable[1], unreadable
    readable = await world.call("carol", "GET", "/namespace/stat", params={"path": SHARED})
    assert readable[0] == 200 and readable[1]["replicas"], readable
    own = await world.call("bob", "GET", "/namespace/stat", params={"path": UNREADABLE})
    assert own[1]["replicas"], own


async def test_the_file_page_shows_replicas_only_to_a_reader_of_the_file(world: World, portal: PortalFactory) -> None:
    async with world.client("bob") as bob:
        await register_with_bytes(bob, world.ses[:1], [(UNREADABLE, 0o600)])
    async with portal(world.tokens["carol"]) as carol:
        unreadable = await carol.get("/ui/file", params={"path": UNREADABLE})
        assert unreadable.status == 200 and 'id="replicas"' not in unreadable.text and "file://" not in unreadable.text
        readable = await carol.get("/ui/file", params={"path": SHARED})
        assert readable.status == 200 and 'id="replicas"' in readable.text
