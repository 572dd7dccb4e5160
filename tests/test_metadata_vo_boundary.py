"""A new entry inherits no metadata across another VO's namespace root nested below the
directory that holds it, even a root declared after that directory's values were set (or after
the root's directory was made, copying them): one VO's values never reach another VO's entries.

Before, a new entry copied its nearest existing ancestor's effective values whatever VO they
came from: a file registered below a VO's root took the values of the other VO's directory
above it (a query on them found the file; its metadata told that VO's values)."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import get_file, register_files
from catalogue.metadata import set_metadata
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.vos import Vo, put_vo
from kernel.db import Document
from tests.fixtures.catalogue import ADMIN

SECRET = {"campaign": "hidden-run"}


def _file(lfn: str) -> dict[str, object]:
    return {"lfn": lfn, "size": 10, "adler32": "0000abcd"}


async def _a_vo_below_a_directory_with_values(db: AsyncDatabase[Document], *, make_root_first: bool) -> None:
    await mkdir(db, ADMIN, "/outer", parents=True)
    await set_metadata(db, ADMIN, "/outer", SECRET)
    if make_root_first:  # the root's directory copied the values, then became another VO's root
        await mkdir(db, ADMIN, "/outer/inner")
    await put_vo(db, Vo(name="inner", roots=["/outer/inner"], scopes=["inner"]))


async def test_a_file_registered_below_a_later_root_without_its_directory_inherits_nothing_from_above(
        catalogue_db: AsyncDatabase[Document]) -> None:
    await _a_vo_below_a_directory_with_values(catalogue_db, make_root_first=False)
    await register_files(catalogue_db, ADMIN, [_file("/outer/inner/d/f")])
    for path in ("/outer/inner/d/f",):
        assert (await get_file(catalogue_db, path))["meta_effective"] == {}
    for path in ("/outer/inner", "/outer/inner/d"):
        doc = await catalogue_db["directories"].find_one({"_id": path})
        assert doc is not None and doc["meta_effective"] == {}, (path, doc)


async def test_a_file_registered_below_a_root_made_before_it_was_one_inherits_nothing_from_above(
        catalogue_db: AsyncDatabase[Document]) -> None:
    await _a_vo_below_a_directory_with_values(catalogue_db, make_root_first=True)
    await register_files(catalogue_db, ADMIN, [_file("/outer/inner/f"), _file("/outer/inner/d/g")])
    await mkdir(catalogue_db, ADMIN, "/outer/inner/e")
    assert (await get_file(catalogue_db, "/outer/inner/f"))["meta_effective"] == {}
    assert (await get_file(catalogue_db, "/outer/inner/d/g"))["meta_effective"] == {}
    made = await catalogue_db["directories"].find_one({"_id": "/outer/inner/e"})
    assert made is not None and made["meta_effective"] == {}


async def test_a_file_moved_below_another_vos_root_inherits_nothing_from_above_it(
        catalogue_db: AsyncDatabase[Document]) -> None:
    await _a_vo_below_a_directory_with_values(catalogue_db, make_root_first=True)
    await register_files(catalogue_db, ADMIN, [_file("/outer/f")])
    await move(catalogue_db, ADMIN, "/outer/f", "/outer/inner/f")
    assert (await get_file(catalogue_db, "/outer/inner/f"))["meta_effective"] == {}


async def test_entries_of_the_same_vo_still_inherit(catalogue_db: AsyncDatabase[Document]) -> None:
    await _a_vo_below_a_directory_with_values(catalogue_db, make_root_first=True)
    await register_files(catalogue_db, ADMIN, [_file("/outer/other/f")])
    assert (await get_file(catalogue_db, "/outer/other/f"))["meta_effective"] == SECRET
