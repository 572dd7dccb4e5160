"""A forced removal has its file's bytes deleted, and holds their paths until they are.

Before, `rm --force` dropped the record and left the replicas' bytes at the LFN's path on each
SE: another user with w on the (group-writable) directory registered the same LFN with a replica
on that SE and downloaded the first owner's bytes; and those bytes were nobody's until an audit.
Now each removed replica's path is held (`catalogue.removed_paths`) until the reaper has deleted
its bytes (`transfers.removed_bytes`): a registration at it is refused meanwhile, by anyone."""

from __future__ import annotations

import asyncio
import random
import zlib
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import moved_paths, removed_paths
from catalogue.files import register_files, remove_files
from catalogue.moved_paths import HELD, REMOVED, REMOVED_BEING_DELETED
from catalogue.moves import move
from catalogue.namespace import mkdir
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.authz import World, register_with_bytes
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.transfers import (
    add_ses,
    delete_removed_bytes,
    disk_se,
    fast_settings,
    put_files,
    se_root,
    write_bytes,
)
from transfers.reaper import Reaper

SECRET = "/lhcb/shared/secret.root"


def _row(data: bytes) -> dict[str, object]:
    return {"lfn": SECRET, "size": len(data), "adler32": f"{zlib.adler32(data):08x}", "replicas": [{"se": "DISK1"}]}


async def _removed_by_bob(world: World) -> Path:
    async with world.client("bob") as bob:
        await bob.mkdir("/lhcb/shared", mode=0o770)
        await register_with_bytes(bob, world.ses[:1], [(SECRET, 0o600)])
    status, answer = await world.call("bob", "POST", "/files/remove", {"lfns": [SECRET], "force": True})
    assert status == 200 and answer["successful"][SECRET] == {"removed": True}, answer
    se = world.ses[0]
    return se_root(se) / se.protocols[0].physical_path(SECRET).lstrip("/")


async def test_another_user_cannot_take_over_the_bytes_of_a_force_removed_file(
        world: World, settings: Settings, tmp_path: Path) -> None:
    path = await _removed_by_bob(world)
    bobs = path.read_bytes()
    status, answer = await world.call("carol", "POST", "/files/register", {"files": [_row(bobs)]})
    assert status == 200 and SECRET in answer["failed"], answer  # before: registered, on bob's bytes
    assert "removed file" in answer["failed"][SECRET] and "try again" in answer["failed"][SECRET], answer
    async with world.client("carol") as carol:
        outcome = await carol.download([SECRET], tmp_path / "got")
    assert not (tmp_path / "got").exists() or not any((tmp_path / "got").iterdir()), outcome


async def test_the_reaper_deletes_the_bytes_and_frees_the_path(world: World, settings: Settings) -> None:
    path = await _removed_by_bob(world)
    status, answer = await world.call("bob", "POST", "/files/register", {"files": [_row(path.read_bytes())]})
    assert SECRET in answer["failed"], answer  # the owner too: the bytes are on their way out
    await Reaper(fast_settings(settings), world.db).run(max_cycles=1)
    assert not path.exists()  # gone from the SE itself
    new = b"carol's own bytes"
    write_bytes(world.ses[0], SECRET, new)
    status, answer = await world.call("carol", "POST", "/files/register", {"files": [_row(new)]})
    assert status == 200 and SECRET in answer["successful"], answer
    assert path.read_bytes() == new


async def test_a_moved_file_forced_out_has_the_bytes_at_its_old_path_deleted(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    await put_files(database, [a], ["/vo/x/f"])
    await mkdir(database, ADMIN, "/vo/y")
    await move(database, ADMIN, "/vo/x/f", "/vo/y/f")  # its bytes stay at /vo/x/f
    assert (await remove_files(database, ADMIN, ["/vo/y/f"], force=True))["successful"]["/vo/y/f"]["removed"]
    new = {"lfn": "/vo/x/f", "size": 1, "adler32": "00000001", "replicas": [{"se": "A"}]}
    assert REMOVED_BEING_DELETED in (await register_files(database, ADMIN, [new]))["failed"]["/vo/x/f"]
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    assert not (se_root(a) / "vo/x/f").exists()  # before: left there, dark
    assert "/vo/x/f" in (await register_files(database, ADMIN, [new]))["successful"]


async def test_a_hold_whose_file_stayed_is_taken_back_and_its_bytes_kept(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    """A removal that died between its holds and its delete: the reaper finds the file kept."""
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    await put_files(database, [a], ["/vo/x/f", "/vo/x/g"])
    await mkdir(database, ADMIN, "/vo/y")
    await move(database, ADMIN, "/vo/x/g", "/vo/y/g")
    kept = await database["files"].find({}, {"guid": 1, "replicas": 1}).to_list()
    await removed_paths.hold_removed(database, removed_paths.places_of({doc["_id"]: doc for doc in kept}))
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    assert (se_root(a) / "vo/x/f").exists() and (se_root(a) / "vo/x/g").exists()
    assert await moved_paths.held_by_others(database, [("/vo/x/f", "A", "another"), ("/vo/x/g", "A", "another")]) \
        == {("/vo/x/g", "A"): HELD}  # the moved file's hold is back as it was; the other went
    assert await database["moved_paths"].count_documents({REMOVED: {"$exists": True}}) == 0


async def test_a_hold_taken_back_leaves_a_deletion_at_work_its_own_hold(database: AsyncDatabase[Document]) -> None:
    place = removed_paths.RemovedPlace("A", "/vo/x/f", "guid-f")
    await moved_paths.hold_for_deletion(database, [("A", "/vo/x/f", "guid-f")])  # a reaper deleting its replica
    await removed_paths.hold_removed(database, [place])  # a forced removal of the file, which then kept it
    await removed_paths.unhold_removed(database, [place])
    assert await moved_paths.held_by_others(database, [("/vo/x/f", "A", "another")]) == {
        ("/vo/x/f", "A"): moved_paths.BEING_DELETED}  # before: the deletion's hold went with it
    await moved_paths.end_deletion(database, [("A", "/vo/x/f")])
    assert not await moved_paths.held_by_others(database, [("/vo/x/f", "A", "another")])


async def _register_soon(database: AsyncDatabase[Document], row: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0, 0.01))
    return await register_files(database, ADMIN, [row])


async def test_a_registration_racing_a_forced_removal_never_lands_on_the_old_bytes(
        database: AsyncDatabase[Document], settings: Settings, tmp_path: Path) -> None:
    a = disk_se("A", tmp_path / "a")
    await add_ses(database, a)
    landed = 0
    for _ in range(100):
        old = await put_files(database, [a], ["/vo/f"], size=16)
        row = {"lfn": "/vo/f", "size": 16, "adler32": f"{zlib.adler32(old['/vo/f']):08x}", "replicas": [{"se": "A"}]}
        _, again = await asyncio.gather(remove_files(database, ADMIN, ["/vo/f"], force=True),
                                        _register_soon(database, row))
        landed += bool(again["successful"].get("/vo/f", {}).get("created"))
        await remove_files(database, ADMIN, ["/vo/f"], force=True)
        await delete_removed_bytes(database, settings)
    assert landed == 0
