"""A forced removal forgets a file whose bytes stay on storage (dark data at the path its LFN
gives): only the file's owner or an admin may force it. Before, any user who could write the
directory (a group-writable one) could force-remove another user's file it could not read, then
register the same LFN on the same SE and be handed the owner's bytes at that path."""

from __future__ import annotations

from tests.fixtures.authz import World, register_with_bytes

SECRET = "/lhcb/shared/secret.root"


async def test_only_the_owner_or_an_admin_forces_the_removal_of_a_file_with_replicas(world: World) -> None:
    bob = world.client("bob")
    await bob.mkdir("/lhcb/shared", mode=0o770)
    await register_with_bytes(bob, world.ses[:1], [(SECRET, 0o600)])
    before = await world.snapshot()
    status, answer = await world.call("carol", "POST", "/files/remove", {"lfns": [SECRET], "force": True})
    assert status == 200 and SECRET in answer["failed"], answer
    assert "owner" in answer["failed"][SECRET], answer
    assert await world.snapshot() == before
    status, answer = await world.call("carol", "POST", "/files/remove", {"lfns": [SECRET]})
    assert SECRET in answer["failed"] and "replica" in answer["failed"][SECRET], answer
    status, answer = await world.call("bob", "POST", "/files/remove", {"lfns": [SECRET], "force": True})
    assert status == 200 and answer["successful"][SECRET] == {"removed": True}, answer
