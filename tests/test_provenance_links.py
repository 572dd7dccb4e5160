"""A file holds at most MAX_ANCESTORS direct ancestors however many link calls add them (10,000 a
call, and nothing else bounded the stored list: millions over many calls grew the document
toward MongoDB's 16 MB and every read of the file with it), two concurrent calls included; a
link call answers with what it added, not with the stored list."""

from __future__ import annotations

import asyncio
import json

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.namespace import mkdir
from catalogue.provenance import MAX_ANCESTORS, add_ancestor_links, link_ancestors, walk
from kernel.db import Document
from kernel.errors import LimitExceeded
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.cli import run_cli
from tests.test_catalogue_bad_input import call
from tests.test_input_bounds import snapshot

TOP = "/cta/links"
FILE = f"{TOP}/f"
INPUTS = [f"{TOP}/in{i}" for i in range(5)]  # catalogued: the API links only files the caller can read


def names(start: int, count: int) -> list[str]:
    return [f"{TOP}/raw/r{i:06d}" for i in range(start, start + count)]


async def _file(db: AsyncDatabase[Document]) -> None:
    await mkdir(db, ADMIN, TOP, parents=True)
    files = [{"lfn": lfn, "size": 1, "adler32": "00000001"} for lfn in [FILE, *INPUTS]]
    result = await register_files(db, ADMIN, files)
    assert not result["failed"], result["failed"]


async def _stored(db: AsyncDatabase[Document]) -> list[str]:
    doc = await db["files"].find_one({"_id": FILE}, {"ancestors": 1})
    assert doc is not None
    return list(doc.get("ancestors", []))


async def test_ancestors_piled_on_a_file_call_after_call_stop_at_the_bound_and_nothing_is_written(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await _file(catalogue_db)
    per_call = MAX_ANCESTORS // 4
    await link_ancestors(catalogue_db, FILE, [INPUTS[0], *names(1, per_call - 1)])
    for start in range(per_call, MAX_ANCESTORS, per_call):
        await link_ancestors(catalogue_db, FILE, names(start, per_call))
    before = await snapshot(catalogue_db)
    status, answer = await call(api, "POST", "/provenance/link", body={"lfn": FILE, "ancestors": INPUTS[:2]})
    assert status == 413 and answer["code"] == "limit_exceeded", (status, answer)
    assert FILE in answer["message"] and f"{MAX_ANCESTORS:,}" in answer["message"], answer
    assert answer["details"] == {"lfn": FILE, "max_ancestors": MAX_ANCESTORS}, answer
    assert await snapshot(catalogue_db) == before
    # names it holds already are no growth: a retried call still answers
    status, answer = await call(api, "POST", "/provenance/link", body={"lfn": FILE, "ancestors": INPUTS[:1]})
    assert (status, answer) == (200, {"lfn": FILE, "added": 0, "already_linked": 1})


async def test_concurrent_calls_each_within_the_bound_do_not_pass_it_together(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await _file(catalogue_db)
    await add_ancestor_links(catalogue_db, {FILE: names(0, MAX_ANCESTORS - 12)})
    calls = [names(MAX_ANCESTORS + 10 * c, 5) for c in range(8)]  # room for two of them
    outcomes = await asyncio.gather(*(link_ancestors(catalogue_db, FILE, given) for given in calls),
                                    return_exceptions=True)
    assert sum(isinstance(o, LimitExceeded) for o in outcomes) == 6, outcomes
    assert len(await _stored(catalogue_db)) == MAX_ANCESTORS - 2


async def test_a_link_answer_counts_what_it_added_whatever_the_file_holds(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await _file(catalogue_db)
    await add_ancestor_links(catalogue_db, {FILE: names(0, MAX_ANCESTORS - 10)})
    async with api.client() as admin:
        await admin.link_ancestors(FILE, INPUTS[:2])
        answer = await admin.link_ancestors(FILE, INPUTS)
    assert answer == {"lfn": FILE, "added": 3, "already_linked": 2}
    assert len(json.dumps(answer)) < 200


async def test_a_file_holding_more_than_the_bound_is_still_read_but_given_no_more(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await _file(catalogue_db)
    held = names(0, MAX_ANCESTORS + 5)  # stored before the bound existed
    await catalogue_db["files"].update_one({"_id": FILE}, {"$set": {"ancestors": held}})
    found = await walk(catalogue_db, FILE, "ancestors", 1)
    assert len(found) == MAX_ANCESTORS + 5
    with pytest.raises(LimitExceeded):
        await link_ancestors(catalogue_db, FILE, names(MAX_ANCESTORS + 5, 1))
    assert await _stored(catalogue_db) == held


async def test_registering_a_file_again_with_ancestors_past_the_bound_fails_that_file(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    await _file(catalogue_db)
    await add_ancestor_links(catalogue_db, {FILE: names(0, MAX_ANCESTORS)})
    again = {"lfn": FILE, "size": 1, "adler32": "00000001", "ancestors": INPUTS[:1]}
    result = await register_files(catalogue_db, ADMIN, [again])
    assert list(result["failed"]) == [FILE] and str(MAX_ANCESTORS) in result["failed"][FILE].replace(",", "")
    assert len(await _stored(catalogue_db)) == MAX_ANCESTORS


async def test_the_cli_says_what_a_link_added(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    await _file(catalogue_db)
    done = await run_cli(api.url, api.admin_token, "ancestry", "link", FILE, *INPUTS[:2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{FILE} <- 2 ancestor(s) added, 0 already linked"
    done = await run_cli(api.url, api.admin_token, "ancestry", "link", FILE, *INPUTS[1:3], "--json")
    assert json.loads(done.stdout) == {"lfn": FILE, "added": 1, "already_linked": 1}
