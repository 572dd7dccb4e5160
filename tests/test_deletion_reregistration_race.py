"""A deletion never deletes the bytes of a file registered at its LFN after the one it retired.

Between a deletion's retirement of a replica and its deletion of the bytes, the file may be forced
out of the catalogue (`remove_files(force=True)`: its record goes, its bytes stay) and a new file
registered at the same LFN, whose replica on that SE has the same path. Before, the deletion then
deleted the new file's bytes: `available` in the catalogue, nothing on the SE. The deletion is run
in its real steps (`transfers.deletion`), as a reaper slow between them does."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import moved_paths
from catalogue.files import register_files, remove_files
from catalogue.replica_removal import remove_retired
from catalogue.storage_elements import StorageElement
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.transfers import add_ses, disk_se, fast_settings, put_files, replica_status, se_root, write_bytes
from transfers.deletion import Deletion, Retired, delete_held_bytes, retire_many
from transfers.reaper import Reaper

LFN = "/vo/f"


async def register_new_file(db: AsyncDatabase[Document], data: bytes) -> dict[str, object]:
    """A new file at LFN with a replica on B, as an upload leaves it (its bytes written there)."""
    return await register_files(db, ADMIN, [{"lfn": LFN, "size": len(data), "adler32": f"{zlib.adler32(data):08x}",
                                             "replicas": [{"se": "B"}]}])


async def retired_on_b(db: AsyncDatabase[Document], tmp_path: Path) -> tuple[dict[str, StorageElement], Retired]:
    """LFN on SEs A and B, and its replica on B retired by a deletion (its first step)."""
    a, b = disk_se("A", tmp_path / "a"), disk_se("B", tmp_path / "b")
    await add_ses(db, a, b)
    await put_files(db, [a, b], [LFN])
    retired = await retire_many(db, [Deletion("d", LFN, ("B",))], {"A": a, "B": b})
    assert retired.targets == {"d": [(LFN, "B")]}
    return {"A": a, "B": b}, retired


async def test_a_file_registered_again_after_the_bytes_go_keeps_its_bytes(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    ses, retired = await retired_on_b(database, tmp_path)
    # meanwhile: the file is forced out; its paths are held until their bytes are deleted
    assert (await remove_files(database, ADMIN, [LFN], force=True))["successful"][LFN]["removed"]
    assert "being deleted" in (await register_new_file(database, b"new bytes"))["failed"][LFN]
    # the deletion's last steps leave the forced-out file's bytes to the removal's own deletion
    assert not await delete_held_bytes(database, retired.places, ses, settings.storage_credentials)
    assert await remove_retired(database, [(LFN, "B")]) == set()
    assert "being deleted" in (await register_new_file(database, b"new bytes"))["failed"][LFN]
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    assert not (se_root(ses["B"]) / "vo/f").exists()
    new = os.urandom(2048)
    write_bytes(ses["B"], LFN, new)
    assert not (await register_new_file(database, new))["failed"]
    assert (se_root(ses["B"]) / "vo/f").read_bytes() == new
    assert await replica_status(database, LFN, "B") == "available"


async def test_a_file_registered_while_the_bytes_go_is_refused_until_they_are_gone(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    _, retired = await retired_on_b(database, tmp_path)
    place = retired.places[(LFN, "B")]
    await moved_paths.hold_for_deletion(database, [("B", place.path, place.guid)])  # the deletion, about to delete
    assert (await remove_files(database, ADMIN, [LFN], force=True))["successful"][LFN]["removed"]
    refused = await register_new_file(database, b"new bytes")
    assert "being deleted" in refused["failed"][LFN], refused
    assert await replica_status(database, LFN, "B") is None  # taken back, not left half-registered
    await moved_paths.end_deletion(database, [("B", place.path)])  # the deletion ended
    assert "being deleted" in (await register_new_file(database, b"new bytes"))["failed"][LFN]  # the removal's hold
    await Reaper(fast_settings(settings), database).run(max_cycles=1)
    assert not (await register_new_file(database, b"new bytes"))["failed"]
