"""An ancestors walk reads each level only as far as its result bound allows, plus one name, and
is refused like a descendants walk beyond it: a file's `ancestors` are free names (10,000 more
a link call), and the walk read every one of a level's files' names before counting them."""

from __future__ import annotations

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.provenance import Replies
from catalogue.files import register_files
from catalogue.namespace import mkdir
from catalogue.provenance import MAX_RESULTS, add_ancestor_links, record_production, walk
from kernel.db import Document
from kernel.errors import InvalidInput
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN

TOP = "/cta/prov"
PARENTS = 30
PER_PARENT = 10_000  # what one link call may add


async def _files(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    result = await register_files(db, ADMIN, [{"lfn": lfn, "size": 1, "adler32": "00000001"} for lfn in lfns])
    assert not result["failed"], result["failed"]


async def _wide(db: AsyncDatabase[Document]) -> str:
    """A file with PARENTS parents, each made of PER_PARENT other files: 300,000 ancestors at depth 2."""
    await mkdir(db, ADMIN, TOP, parents=True)
    parents = [f"{TOP}/p{i:02d}" for i in range(PARENTS)]
    await _files(db, [f"{TOP}/f", *parents])
    await add_ancestor_links(db, {f"{TOP}/f": parents})
    for i, parent in enumerate(parents):  # as a job's outputs are recorded (a link call adds as many)
        made_from = [f"{TOP}/raw/{i:02d}/r{j:05d}" for j in range(PER_PARENT)]
        await record_production(db, [parent], made_from, {"job": f"job{i}", "attempt": 1})
    return f"{TOP}/f"


async def test_an_ancestors_walk_past_its_bound_reads_only_the_bound_and_says_where_it_was_cut(
    catalogue_db: AsyncDatabase[Document], mongodb_uri: str, settings: Settings,
) -> None:
    lfn = await _wide(catalogue_db)
    counter = Replies()  # counts the ancestor names the database answers with
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[counter], tz_aware=True)
    try:
        with pytest.raises(InvalidInput) as cut:
            await walk(client[settings.database], lfn, "ancestors", 3)
    finally:
        await client.close()
    assert PARENTS < counter.names <= PARENTS + MAX_RESULTS + 1, counter.names  # not 300,030
    assert cut.value.details == {"bound": MAX_RESULTS, "depth": 2}
    assert f"more than {MAX_RESULTS} related files within depth 2" in cut.value.message


async def test_the_api_refuses_a_walk_past_its_bound_with_the_depth_it_reached(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    lfn = await _wide(catalogue_db)
    async with api.client() as admin:
        with pytest.raises(InvalidInput) as cut:
            await admin.provenance(lfn, depth=3)
    assert cut.value.details == {"bound": MAX_RESULTS, "depth": 2}


async def test_a_walk_within_its_bound_lists_shared_ancestors_once_at_their_nearest_depth(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await mkdir(catalogue_db, ADMIN, TOP, parents=True)
    await _files(catalogue_db, [f"{TOP}/f", f"{TOP}/a", f"{TOP}/b", f"{TOP}/calib"])
    shared = [f"{TOP}/raw/r{j}" for j in range(40)]
    await add_ancestor_links(catalogue_db, {f"{TOP}/f": [f"{TOP}/a", f"{TOP}/b"],
                                            f"{TOP}/a": [f"{TOP}/calib", *shared],
                                            f"{TOP}/b": [f"{TOP}/calib", *shared, f"{TOP}/a"]})
    found = await walk(catalogue_db, f"{TOP}/f", "ancestors", 5, bound=43)
    assert [(f["lfn"], f["depth"], f["exists"]) for f in found] == [
        (f"{TOP}/a", 1, True), (f"{TOP}/b", 1, True), (f"{TOP}/calib", 2, True),
        *((lfn, 2, False) for lfn in sorted(shared))]
    with pytest.raises(InvalidInput) as cut:
        await walk(catalogue_db, f"{TOP}/f", "ancestors", 5, bound=42)
    assert cut.value.details == {"bound": 42, "depth": 2}
