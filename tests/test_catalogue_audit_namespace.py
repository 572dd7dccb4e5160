"""The namespace routes found leaking by the catalogue audit: a move that carries another VO's
nested root away, moves and removals that tell a hidden entry from a missing one, and stat (and
the portal's file page) showing where the bytes of a file the caller may not read are."""

from __future__ import annotations

from tests.fixtures.authz import MISSING, PRIVATE, World, same_answer


async def test_removing_a_hidden_entry_answers_as_removing_a_missing_one(world: World) -> None:
    hidden = await world.call("alice", "POST", "/namespace/remove", {"path": PRIVATE})
    missing = await world.call("alice", "POST", "/namespace/remove", {"path": MISSING})
    assert same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)


async def test_removing_another_vos_entry_answers_as_removing_a_missing_one(vo_world: World) -> None:
    hidden = await vo_world.call("eve", "POST", "/namespace/remove", {"path": PRIVATE})
    missing = await vo_world.call("eve", "POST", "/namespace/remove", {"path": MISSING})
    assert hidden[0] == 404 and same_answer(hidden, missing, PRIVATE, MISSING), (hidden, missing)
