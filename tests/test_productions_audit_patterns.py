"""A production's chain is checked by matching each step's query against the outputs' metadata
before anything is stored: the query's wildcards are the user's, matched by RE2 in linear time
(Python's `re` backtracked on `*a*a*a*a*a*a*a*a*b` for seconds per request, on the API's event
loop), and a pattern RE2 refuses is a 400 naming the step."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kernel.errors import InvalidInput
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid

USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write")


def chain(made: str, query: str) -> dict[str, Any]:
    """Step a makes one file with metadata kind=`made`; step b reads `query`."""
    return {"name": "p", "steps": [
        {"name": "a", "type": "mc", "max_tasks": 1, "job": {"executable": "/bin/true", "outputs": [
            {"path": "o", "lfn": "/cta/a/%(task)s", "se": "SITE-A-DISK", "meta": {"kind": made}}]}},
        {"name": "b", "input_query": query, "input_path": "/cta", "job": {"executable": "/bin/true"}}]}


async def test_a_backtracking_wildcard_query_is_judged_at_once(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        started = time.monotonic()
        with pytest.raises(InvalidInput, match="can never match"):
            await alice.add_production(chain("a" * 45, "kind=" + "*a" * 8 + "*b"))
        took = time.monotonic() - started
    assert took < 1.0, f"checking the chain took {took:.1f} s"


async def test_a_pattern_the_service_does_not_take_is_refused_naming_the_step(api: RunningApi, grid: Grid) -> None:
    async with api.client(api.token(sub="alice", vo="cta", groups=("cta",), scopes=USER)) as alice:
        with pytest.raises(InvalidInput, match=r"step b: a pattern of its query .* is refused"):
            await alice.add_production(chain("a" * 600, "kind=*" + "a" * 600))
        assert await alice.list_transformations() == [] and await alice.list_productions() == []
