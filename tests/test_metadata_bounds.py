"""Setting a directory's metadata costs a fixed number of passes over its subtree however many
keys the call carries, and a call carries at most MAX_KEYS_PER_CALL keys and MAX_VALUES_CHARS
of text (a directory's values are written to every entry below it: 1000 keys on a directory of
2000 files held the API and the database for many minutes; an 8 MB list on one of 300 files
wrote 2.4 GB)."""

from __future__ import annotations

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.metadata import MAX_KEYS_PER_CALL, get_metadata, remove_metadata, set_metadata
from catalogue.metadata_fields import MAX_STRING, MAX_VALUES_CHARS
from catalogue.namespace import mkdir
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN, CommandCounter
from tests.test_input_bounds import refused


async def _tree(db: AsyncDatabase[Document]) -> None:
    await mkdir(db, ADMIN, "/cta/run/near", parents=True)
    await register_files(db, ADMIN, [{"lfn": lfn, "size": 1, "adler32": "00000001"} for lfn in (
        "/cta/run/f1", "/cta/run/near/f2")])
    await set_metadata(db, ADMIN, "/cta/run/near", {"k3": "near"})


async def test_many_keys_on_a_directory_cost_the_same_writes_as_one(
    catalogue_db: AsyncDatabase[Document], mongodb_uri: str, settings: Settings,
) -> None:
    await _tree(catalogue_db)
    counter = CommandCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[counter], tz_aware=True)
    db = client[settings.database]
    try:
        writes = {}
        for count in (1, 40):
            counter.commands.clear()
            await set_metadata(db, ADMIN, "/cta/run", {f"k{i}": i for i in range(count)})
            writes[count] = counter.commands.count("update")
            counter.commands.clear()
            await remove_metadata(db, ADMIN, "/cta/run", [f"k{i}" for i in range(count)])
            writes[-count] = counter.commands.count("update")
        assert writes[40] <= writes[1] + 2 and writes[-40] <= writes[-1] + 2, writes
    finally:
        await client.close()


async def test_a_nearer_value_is_kept_and_the_other_keys_still_reach_below_it(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    await set_metadata(catalogue_db, ADMIN, "/cta/run", {f"k{i}": i for i in range(5)})
    expected = {"k0": 0, "k1": 1, "k2": 2, "k3": "near", "k4": 4}
    for path in ("/cta/run/near", "/cta/run/near/f2"):
        assert (await get_metadata(catalogue_db, ADMIN, path))["effective"] == expected, path
    assert (await get_metadata(catalogue_db, ADMIN, "/cta/run/f1"))["effective"]["k3"] == 3
    await remove_metadata(catalogue_db, ADMIN, "/cta/run", [f"k{i}" for i in range(5)])
    for path in ("/cta/run/near", "/cta/run/near/f2"):
        assert (await get_metadata(catalogue_db, ADMIN, path))["effective"] == {"k3": "near"}, path
    assert (await get_metadata(catalogue_db, ADMIN, "/cta/run/f1"))["effective"] == {}


async def test_a_call_with_too_many_keys_is_refused_and_changes_nothing(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    too_many = {f"k{i}": "v" for i in range(MAX_KEYS_PER_CALL + 1)}
    await refused(api, catalogue_db, "POST", "/metadata/set", body={"path": "/cta/run", "values": too_many})
    await refused(api, catalogue_db, "POST", "/metadata/remove", body={"path": "/cta/run", "keys": list(too_many)})


async def test_values_with_too_much_text_are_refused_and_change_nothing(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    long_items = ["x" * (MAX_STRING + 1)]
    answer = await refused(api, catalogue_db, "POST", "/metadata/set", body={"path": "/cta/run", "values": {
        "tags": long_items}})
    assert len(answer["message"]) < 1000, answer  # the refused value is not echoed whole
    many = {f"k{i}": ["y" * MAX_STRING] * 2 for i in range(MAX_VALUES_CHARS // (2 * MAX_STRING) + 1)}
    await refused(api, catalogue_db, "POST", "/metadata/set", body={"path": "/cta/run", "values": many})
