"""Transfers over time: per-hour counts of done and failed transfers and MB moved, over HTTP and
the CLI, every hour present (zeros included), filtered by link."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import InvalidInput
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from transfers.link_series import record_hour


async def test_the_series_counts_each_hour_and_filters_by_link(api: RunningApi,
                                                              database: AsyncDatabase[Document]) -> None:
    now = dt.datetime.now(dt.UTC)
    await record_hour(database, "A", "B", ok=True, nbytes=3_000_000, at=now - dt.timedelta(hours=2))
    await record_hour(database, "A", "B", ok=True, nbytes=1_000_000, at=now)
    await record_hour(database, "A", "C", ok=False, nbytes=0, at=now)
    await record_hour(database, "A", "C", ok=True, nbytes=5, at=now - dt.timedelta(hours=30))
    async with api.client(api.token(scopes=("transfers.read",))) as operator:
        series = await operator.transfer_series(hours=3)
        assert (series["done"], series["failed"], series["mb"]) == ([1, 0, 1], [0, 0, 1], [3.0, 0, 1.0])
        assert series["hours"][2] - series["hours"][0] == 7200
        to_c = await operator.transfer_series(hours=48, dest="C")
        assert (sum(to_c["done"]), sum(to_c["failed"])) == (1, 1) and len(to_c["hours"]) == 48
        with pytest.raises(InvalidInput):
            await operator.transfer_series(hours=0)
    done = await run_cli(api.url, api.admin_token, "transfers", "series", "--hours", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["done"] == [1, 0, 1]
    shown = await run_cli(api.url, api.admin_token, "transfers", "series", "--hours", "3", "--source", "A")
    assert shown.returncode == 0 and "per hour" in shown.stdout
