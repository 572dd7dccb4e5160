"""A directory's metadata written by several calls at once: every entry below ends with the
value the directory ends with (`catalogue.metadata`)."""

from __future__ import annotations

import asyncio

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.metadata import get_metadata, set_metadata
from kernel.db import Document
from kernel.errors import Conflict
from tests.fixtures.catalogue import ADMIN


async def test_a_set_of_several_keys_racing_a_set_of_one_leaves_every_entry_below_with_the_final_value(
        catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    # Half the files have an own value of `other`: a set of `tag` and `other` reads which, then
    # writes them `tag` alone, and another call's `tag` may land between that read and write.
    files = [{"lfn": f"/cta/mix/d{d}/f{i}", "size": 1, "adler32": "00000001",
              **({"meta": {"other": "mine"}} if i % 2 else {})} for d in range(4) for i in range(100)]
    assert not (await register_files(db, ADMIN, files))["failed"]
    for attempt in range(10):
        outcomes = await asyncio.gather(
            set_metadata(db, ADMIN, "/cta/mix", {"tag": f"a{attempt}", "other": "x"}),
            set_metadata(db, ADMIN, "/cta/mix", {"tag": f"b{attempt}"}), return_exceptions=True)
        assert all(not isinstance(o, Exception) or isinstance(o, Conflict) for o in outcomes), outcomes
        final = (await get_metadata(db, ADMIN, "/cta/mix"))["own"]["tag"]
        below = await db["files"].distinct("meta_effective.tag", {"parent": {"$regex": "^/cta/mix/"}})
        assert below == [final], (attempt, final, below)
