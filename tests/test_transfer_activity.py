"""Accounting by activity: transfers counted per activity (done, failed attempts, MB) in
time buckets, over HTTP and the CLI, with every bucket present and the bucket count bounded."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import InvalidInput
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.transfers import transfers_by_activity
from transfers.activity_series import activity_series


async def test_requests_are_counted_per_activity_in_their_bucket(api: RunningApi,
                                                                 database: AsyncDatabase[Document]) -> None:
    await transfers_by_activity(database)
    async with api.client(api.token(scopes=("transfers.read",))) as operator:
        doc = await operator.transfer_activity(hours=3)
        assert len(doc["buckets"]) == 3 and doc["buckets"][2] - doc["buckets"][1] == 3600
        assert doc["activities"]["reprocessing"] == {"done": [0, 0, 2], "failed": [0, 0, 1], "mb": [0, 0, 4.5]}
        assert {t["activity"]: (t["done"], t["failed"], t["bytes"]) for t in doc["totals"]} == {
            "reprocessing": (2, 1, 4_500_000), "user": (2, 0, 13_500_000)}
        with pytest.raises(InvalidInput):
            await operator.transfer_activity(hours=500, step_hours=1)  # more than 120 buckets
    later = await activity_series(database, hours=4, step_hours=1, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    assert later["activities"]["user"]["done"] == [0, 2, 0, 0]  # two buckets before the last one
    daily = await activity_series(database, hours=72, step_hours=24)
    assert daily["activities"]["user"]["done"] == [0, 0, 2]
    shown = await run_cli(api.url, api.admin_token, "transfers", "activity", "--hours", "6")
    assert shown.returncode == 0 and "reprocessing" in shown.stdout and "4500000" in shown.stdout
    as_json = await run_cli(api.url, api.admin_token, "transfers", "activity", "--json")
    assert json.loads(as_json.stdout)["activities"]["user"]["done"][-1] == 2
