"""User metadata: typed declared fields, inheritance from directories, overrides and removal."""

from __future__ import annotations

import datetime as dt

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import get_file, register_files
from catalogue.metadata import get_metadata, remove_metadata, set_metadata
from catalogue.metadata_fields import FieldDeclaration, declare_field, list_fields, undeclare_field
from catalogue.moves import move
from catalogue.namespace import mkdir
from kernel.db import Document
from kernel.errors import Forbidden, InvalidInput
from tests.fixtures.catalogue import ADMIN, BOB


def a_file(lfn: str, **extra: object) -> dict[str, object]:
    return {"lfn": lfn, "size": 10, "adler32": "0000abcd", **extra}


@pytest.fixture
async def tree(catalogue_db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    await declare_field(catalogue_db, FieldDeclaration(key="run", type="int"))
    await declare_field(catalogue_db, FieldDeclaration(key="taken", type="datetime"))
    await mkdir(catalogue_db, ADMIN, "/cta/mc/proton", parents=True)
    await register_files(catalogue_db, ADMIN, [a_file("/cta/mc/proton/f1"), a_file("/cta/mc/f2")])
    return catalogue_db


async def effective(db: AsyncDatabase[Document], path: str) -> dict[str, object]:
    return (await get_metadata(db, ADMIN, path))["effective"]


async def test_directory_values_reach_every_entry_below(tree: AsyncDatabase[Document]) -> None:
    await set_metadata(tree, ADMIN, "/cta/mc", {"particle": "proton", "run": 12})
    for path in ("/cta/mc", "/cta/mc/proton", "/cta/mc/proton/f1", "/cta/mc/f2"):
        assert await effective(tree, path) == {"particle": "proton", "run": 12}, path
    assert (await get_metadata(tree, ADMIN, "/cta/mc/proton/f1"))["own"] == {}


async def test_nearer_directories_and_own_values_override_farther_ones(tree: AsyncDatabase[Document]) -> None:
    await set_metadata(tree, ADMIN, "/cta/mc/proton/f1", {"run": 3})
    await set_metadata(tree, ADMIN, "/cta/mc/proton", {"particle": "gamma"})
    await set_metadata(tree, ADMIN, "/cta", {"particle": "proton", "run": 1})
    assert await effective(tree, "/cta/mc/proton/f1") == {"particle": "gamma", "run": 3}
    assert await effective(tree, "/cta/mc/f2") == {"particle": "proton", "run": 1}
    await set_metadata(tree, ADMIN, "/cta", {"run": 2})
    assert (await effective(tree, "/cta/mc/proton/f1"))["run"] == 3
    assert (await effective(tree, "/cta/mc/f2"))["run"] == 2


async def test_removing_a_value_falls_back_to_the_nearest_directory_above(tree: AsyncDatabase[Document]) -> None:
    await set_metadata(tree, ADMIN, "/cta", {"particle": "proton"})
    await set_metadata(tree, ADMIN, "/cta/mc/proton", {"particle": "gamma"})
    await set_metadata(tree, ADMIN, "/cta/mc/proton/f1", {"particle": "electron"})
    await remove_metadata(tree, ADMIN, "/cta/mc/proton/f1", ["particle"])
    assert (await effective(tree, "/cta/mc/proton/f1"))["particle"] == "gamma"
    await remove_metadata(tree, ADMIN, "/cta/mc/proton", ["particle"])
    assert (await effective(tree, "/cta/mc/proton/f1"))["particle"] == "proton"
    await remove_metadata(tree, ADMIN, "/cta", ["particle"])
    assert await effective(tree, "/cta/mc/proton/f1") == {}


async def test_new_entries_inherit_at_creation(tree: AsyncDatabase[Document]) -> None:
    await set_metadata(tree, ADMIN, "/cta/mc", {"particle": "proton"})
    await register_files(tree, ADMIN, [a_file("/cta/mc/new/deep/f", meta={"run": "7"})])
    await mkdir(tree, ADMIN, "/cta/mc/other")
    assert await effective(tree, "/cta/mc/new/deep/f") == {"particle": "proton", "run": 7}
    assert await effective(tree, "/cta/mc/new") == {"particle": "proton"}
    assert await effective(tree, "/cta/mc/other") == {"particle": "proton"}


async def test_declared_types_are_enforced_and_values_coerced(tree: AsyncDatabase[Document]) -> None:
    await set_metadata(tree, ADMIN, "/cta/mc/f2", {"run": "40", "taken": "2024-05-01T12:00:00Z", "tags": ["a"]})
    got = await effective(tree, "/cta/mc/f2")
    assert got["run"] == 40 and got["taken"] == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    for bad in ({"run": "forty"}, {"run": 1.5}, {"taken": "yesterday"}, {"bad.key": 1}, {"x": {"nested": 1}}):
        with pytest.raises(InvalidInput):
            await set_metadata(tree, ADMIN, "/cta/mc/f2", {"particle": "kept-out", **bad})
    assert "particle" not in await effective(tree, "/cta/mc/f2")
    with pytest.raises(InvalidInput, match="file #0"):
        await register_files(tree, ADMIN, [a_file("/cta/mc/g", meta={"run": "x"})])
    with pytest.raises(Exception, match="does not exist"):
        await get_file(tree, "/cta/mc/g")


async def test_fields_are_listed_and_a_type_cannot_change_in_place(tree: AsyncDatabase[Document]) -> None:
    assert [(f["key"], f["type"]) for f in await list_fields(tree)] == [("run", "int"), ("taken", "datetime")]
    assert "meta_run" in await tree["files"].index_information()
    with pytest.raises(InvalidInput, match="declared as int"):
        await declare_field(tree, FieldDeclaration(key="run", type="string"))
    await undeclare_field(tree, "run")
    assert "meta_run" not in await tree["files"].index_information()


async def test_setting_needs_write_permission_on_the_entry(tree: AsyncDatabase[Document]) -> None:
    with pytest.raises(Forbidden):
        await set_metadata(tree, BOB, "/cta/mc/f2", {"x": 1})
    assert (await get_metadata(tree, BOB, "/cta/mc/f2"))["effective"] == {}


async def test_moved_entries_inherit_from_their_new_place_and_keep_their_own(tree: AsyncDatabase[Document]) -> None:
    await mkdir(tree, ADMIN, "/km3/sea", parents=True)
    await set_metadata(tree, ADMIN, "/cta", {"site": "la-palma", "vo": "cta"})
    await set_metadata(tree, ADMIN, "/km3", {"site": "sea"})
    await set_metadata(tree, ADMIN, "/cta/mc/proton", {"particle": "proton"})
    await set_metadata(tree, ADMIN, "/cta/mc/proton/f1", {"run": 5})
    await move(tree, ADMIN, "/cta/mc", "/km3/sea/mc")
    assert await effective(tree, "/km3/sea/mc/proton/f1") == {"site": "sea", "particle": "proton", "run": 5}
    assert (await get_metadata(tree, ADMIN, "/km3/sea/mc/proton/f1"))["origin"] == {
        "site": "/km3", "particle": "/km3/sea/mc/proton", "run": "/km3/sea/mc/proton/f1"}
    await set_metadata(tree, ADMIN, "/km3/sea/mc/proton", {"particle": "neutrino"})
    assert (await effective(tree, "/km3/sea/mc/proton/f1"))["particle"] == "neutrino"
    await move(tree, ADMIN, "/km3/sea/mc/f2", "/cta/f2")
    assert await effective(tree, "/cta/f2") == {"site": "la-palma", "vo": "cta"}
