"""Setting a directory's metadata costs a fixed number of passes over its subtree however many
keys the call carries, and a call carries at most MAX_KEYS_PER_CALL keys and MAX_VALUES_CHARS
of text (a directory's values are written to every entry below it: 1000 keys on a directory of
2000 files held the API and the database for many minutes; an 8 MB list on one of 300 files
wrote 2.4 GB). An entry holds at most MAX_KEYS_PER_ENTRY own keys and MAX_TEXT_PER_ENTRY
characters of text however many calls set them (only the 16 MB document size bounded them),
two concurrent calls included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.metadata import MAX_KEYS_PER_CALL, VERSION, get_metadata, remove_metadata, set_metadata
from catalogue.metadata_fields import MAX_KEYS_PER_ENTRY, MAX_STRING, MAX_TEXT_PER_ENTRY, MAX_VALUES_CHARS
from catalogue.namespace import mkdir
from kernel.db import Document
from kernel.errors import LimitExceeded
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN, CommandCounter
from tests.test_catalogue_bad_input import call
from tests.test_input_bounds import refused, snapshot


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
            counter.clear()
            await set_metadata(db, ADMIN, "/cta/run", {f"k{i}": i for i in range(count)})
            writes[count] = counter.commands.count("update")
            counter.clear()
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


# ------------------------------------------------------------------------- the whole entry

FILE = "/cta/run/f1"
TEXT = "t" * MAX_STRING


async def _keys(db: AsyncDatabase[Document], path: str, count: int, prefix: str = "k") -> None:
    """Own keys k0..k<count-1> (numbers: no text) on `path`, in calls of MAX_KEYS_PER_CALL."""
    for start in range(0, count, MAX_KEYS_PER_CALL):
        end = min(count, start + MAX_KEYS_PER_CALL)
        await set_metadata(db, ADMIN, path, {f"{prefix}{i}": i for i in range(start, end)})


async def _text(db: AsyncDatabase[Document], path: str, chars: int) -> None:
    """Own keys holding `chars` characters of text on `path`, in calls of at most MAX_VALUES_CHARS."""
    per_call = MAX_VALUES_CHARS // MAX_STRING
    items = chars // MAX_STRING
    for start in range(0, items, per_call):
        await set_metadata(db, ADMIN, path, {f"t{i}": TEXT for i in range(start, min(items, start + per_call))})


async def over_the_bound(api: RunningApi, db: AsyncDatabase[Document], values: dict[str, Any]) -> dict[str, Any]:
    """Set `values` on FILE through the API: 413 limit_exceeded, nothing written; the error body."""
    before = await snapshot(db)
    status, answer = await call(api, "POST", "/metadata/set", body={"path": FILE, "values": values})
    assert status == 413 and answer["code"] == "limit_exceeded", (status, answer)
    assert await snapshot(db) == before
    return answer


async def test_keys_piled_on_an_entry_call_after_call_stop_at_the_entry_bound(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    await _keys(catalogue_db, FILE, MAX_KEYS_PER_ENTRY)
    answer = await over_the_bound(api, catalogue_db, {"one_more": 1})
    assert answer["details"]["keys"] == MAX_KEYS_PER_ENTRY + 1, answer
    await set_metadata(catalogue_db, ADMIN, FILE, {"k0": "overwritten"})  # same keys: still within
    await remove_metadata(catalogue_db, ADMIN, FILE, ["k1"])
    await set_metadata(catalogue_db, ADMIN, FILE, {"one_more": 1})  # the removed key's room
    await over_the_bound(api, catalogue_db, {"two_more": 2})


async def test_text_piled_on_an_entry_stops_at_the_entry_bound_and_an_overwrite_frees_its_old_text(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    await _text(catalogue_db, FILE, MAX_TEXT_PER_ENTRY)
    answer = await over_the_bound(api, catalogue_db, {"note": "x"})
    assert answer["details"]["text"] == MAX_TEXT_PER_ENTRY + 1, answer
    await set_metadata(catalogue_db, ADMIN, FILE, {"t0": "short"})  # frees what t0 held
    await set_metadata(catalogue_db, ADMIN, FILE, {"note": "x" * (MAX_STRING - len("short"))})
    await over_the_bound(api, catalogue_db, {"t0": "shorts"})


async def test_a_directory_is_bounded_by_its_own_keys_and_its_files_by_theirs_not_by_what_they_inherit(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    await _keys(catalogue_db, "/cta/run", MAX_KEYS_PER_ENTRY)
    with pytest.raises(LimitExceeded):
        await set_metadata(catalogue_db, ADMIN, "/cta/run", {"one_more": 1})
    await _keys(catalogue_db, FILE, MAX_KEYS_PER_ENTRY, prefix="own")
    shown = await get_metadata(catalogue_db, ADMIN, FILE)
    assert len(shown["own"]) == MAX_KEYS_PER_ENTRY and len(shown["effective"]) == 2 * MAX_KEYS_PER_ENTRY


async def test_two_concurrent_calls_each_within_the_bound_do_not_pass_it_together(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    await _keys(catalogue_db, FILE, MAX_KEYS_PER_ENTRY - 60)
    for round_ in range(3):
        calls = [{f"r{round_}c{c}k{i}": i for i in range(60)} for c in range(2)]
        outcomes = await asyncio.gather(*(set_metadata(catalogue_db, ADMIN, FILE, values) for values in calls),
                                        return_exceptions=True)
        assert sum(isinstance(o, LimitExceeded) for o in outcomes) == 1, outcomes
        own = (await get_metadata(catalogue_db, ADMIN, FILE))["own"]
        assert len(own) == MAX_KEYS_PER_ENTRY, len(own)
        await remove_metadata(catalogue_db, ADMIN, FILE, [k for k in own if k.startswith(f"r{round_}")])


async def test_an_entry_stored_before_the_entry_bound_is_bounded_by_what_it_holds(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    await _keys(catalogue_db, FILE, MAX_KEYS_PER_ENTRY)
    await catalogue_db["files"].update_one({"_id": FILE}, {"$unset": {VERSION: ""}})  # as stored before
    with pytest.raises(LimitExceeded):
        await set_metadata(catalogue_db, ADMIN, FILE, {"one_more": 1})
    await set_metadata(catalogue_db, ADMIN, FILE, {"k0": "overwritten"})
    assert (await catalogue_db["files"].find_one({"_id": FILE}))[VERSION] == 1


async def test_a_file_registered_with_more_keys_than_an_entry_holds_is_refused(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await _tree(catalogue_db)
    meta = {f"k{i}": i for i in range(MAX_KEYS_PER_ENTRY + 1)}
    await refused(api, catalogue_db, "POST", "/files/register", body={"files": [
        {"lfn": "/cta/run/f9", "size": 1, "adler32": "00000001", "meta": meta}]})
