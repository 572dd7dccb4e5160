"""A metadata query whose size multiplies the work of every file it scans is refused (400, with
the position) before the database sees it: more than MAX_CONDITIONS conditions, or a value with
more than MAX_WILDCARDS wildcards (5000 `*` took 14 s over 3000 files). Queries of ordinary
size still run."""

from __future__ import annotations

import aiohttp
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.meta_query import MAX_CONDITIONS, MAX_WILDCARDS
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.test_input_bounds import refused


async def find_status(api: RunningApi, query: str) -> int:
    """The status of a /find call (a 200 streams NDJSON, which `refused` cannot decode)."""
    headers = {"Authorization": f"Bearer {api.token()}"}
    async with aiohttp.ClientSession() as http, http.post(f"{api.url}/api/v1/find", json={"query": query},
                                                          headers=headers) as resp:
        return resp.status


async def test_a_query_with_too_many_conditions_is_refused(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    query = " or ".join(f"run={i}" for i in range(MAX_CONDITIONS + 1))
    assert await find_status(api, query) == 400
    answer = await refused(api, catalogue_db, "POST", "/find", body={"query": query}, token=api.token())
    assert f"at most {MAX_CONDITIONS} conditions" in answer["message"], answer
    async with api.client(api.token()) as alice:
        assert [f async for f in alice.find(" or ".join(f"run={i}" for i in range(MAX_CONDITIONS)))] == []


async def test_a_value_with_too_many_wildcards_is_refused(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    query = "name=" + "*a" * (MAX_WILDCARDS + 1)
    assert await find_status(api, query) == 400
    answer = await refused(api, catalogue_db, "POST", "/find", body={"query": query}, token=api.token())
    assert f"at most {MAX_WILDCARDS} wildcards" in answer["message"], answer
    async with api.client(api.token()) as alice:
        assert [f async for f in alice.find("name=" + "*a" * (MAX_WILDCARDS // 2))] == []
