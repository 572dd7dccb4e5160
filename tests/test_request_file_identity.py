"""A request acts on the file it was authorized for at submission (its GUID), not on whatever file
bears its LFN when a daemon gets to it: bob's file removed and carol's registered at the same LFN
in their shared group directory, bob's queued requests fail saying so, and carol's file is untouched."""

from __future__ import annotations

from tests.fixtures.authz import World, register_with_bytes
from tests.fixtures.transfers import delete_removed_bytes, fast_settings, replica_status, run_until_drained, se_root
from transfers import requests as rq
from transfers.failures import FILE_REPLACED
from transfers.reaper import Reaper
from transfers.stager import Stager
from transfers.worker import TransferWorker

LFN = "/lhcb/grp/f.root"
BOTH_DISKS, FIRST_DISK, TAPE = slice(0, 2), slice(0, 1), slice(2, 3)  # of World.ses


async def _replace_bobs_file(world: World, ses: slice) -> None:
    """bob's file at LFN goes; carol registers her own there (0600: bob may neither read nor write it)."""
    async with world.client("bob") as bob:
        await bob.remove_files([LFN], force=True)
    await delete_removed_bytes(world.db, world.api.settings)  # the reaper's first step: its paths are free
    async with world.client("carol") as carol:
        await register_with_bytes(carol, world.ses[ses], [(LFN, 0o600)])


async def _bobs_request(world: World) -> rq.Document:
    doc = await world.db[rq.REQUESTS].find_one({"requester": "user:bob", "lfn": LFN})
    assert doc is not None
    return doc


async def _bob_with_file(world: World, ses: slice) -> None:
    async with world.client("bob") as bob:
        await bob.mkdir("/lhcb/grp", mode=0o770)
        await register_with_bytes(bob, world.ses[ses], [(LFN, 0o644)])


async def test_a_queued_deletion_of_a_file_replaced_since_fails_and_deletes_nothing(world: World) -> None:
    await _bob_with_file(world, BOTH_DISKS)
    status, answer = await world.call("bob", "POST", "/requests/deletions", {"lfns": [LFN], "se": "DISK2"})
    assert status == 201 and LFN in answer["successful"], answer
    await _replace_bobs_file(world, BOTH_DISKS)
    await run_until_drained(world.db, Reaper(fast_settings(world.api.settings), world.db), timeout_s=30)
    request = await _bobs_request(world)
    assert (request["state"], request["error_class"]) == ("failed", FILE_REPLACED), request
    assert "no longer the file this request was submitted for" in request["last_error"]
    assert await replica_status(world.db, LFN, "DISK2") == "available"
    assert (se_root(world.ses[1]) / LFN.lstrip("/")).exists()


async def test_a_queued_replication_of_a_file_replaced_since_fails_and_copies_nothing(world: World) -> None:
    await _bob_with_file(world, FIRST_DISK)
    status, answer = await world.call("bob", "POST", "/requests/transfers", {"lfns": [LFN], "dest_se": "DISK2"})
    assert status == 201 and LFN in answer["successful"], answer
    await _replace_bobs_file(world, FIRST_DISK)
    await run_until_drained(world.db, TransferWorker(fast_settings(world.api.settings), world.db), timeout_s=30)
    request = await _bobs_request(world)
    assert (request["state"], request["error_class"]) == ("failed", FILE_REPLACED), request
    assert await replica_status(world.db, LFN, "DISK2") is None
    assert not (se_root(world.ses[1]) / LFN.lstrip("/")).exists()


async def test_a_queued_stage_of_a_file_replaced_since_fails_and_stages_nothing(world: World) -> None:
    await _bob_with_file(world, TAPE)
    status, answer = await world.call("bob", "POST", "/requests/stages", {"lfns": [LFN], "se": "TAPE1"})
    assert status == 201 and LFN in answer["successful"], answer
    await _replace_bobs_file(world, TAPE)
    await run_until_drained(world.db, Stager(fast_settings(world.api.settings), world.db), timeout_s=30)
    request = await _bobs_request(world)
    assert (request["state"], request["error_class"], request.get("stage")) == ("failed", FILE_REPLACED, None)


async def test_a_request_for_the_new_file_does_not_join_one_open_for_the_replaced_file(world: World) -> None:
    await _bob_with_file(world, BOTH_DISKS)
    status, _ = await world.call("bob", "POST", "/requests/deletions", {"lfns": [LFN], "se": "DISK2"})
    assert status == 201
    await _replace_bobs_file(world, BOTH_DISKS)
    status, answer = await world.call("carol", "POST", "/requests/deletions", {"lfns": [LFN], "se": "DISK2"})
    assert status == 201 and "still open" in answer["failed"].get(LFN, ""), answer
    assert not (await _bobs_request(world)).get(rq.JOINED)
