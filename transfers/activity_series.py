"""Accounting of finished requests by activity: totals, and a series over time, each counted by
MongoDB aggregation (`$match` + `$group`) so that callers get a few numbers, never the requests.

FerretDB has no date operators (`$dateTrunc`, `$subtract`), so a series is counted per time
bucket, each count reading the finished requests of its bucket through `requests_by_finished`;
the number of buckets is bounded (`MAX_BUCKETS`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, IndexSpec, database_errors
from kernel.errors import InvalidInput
from transfers.requests import REQUESTS

INDEXES = [IndexSpec(REQUESTS, [("finished", 1)], name="requests_by_finished", sparse=True)]
MAX_HOURS = 24 * 90
MAX_BUCKETS = 120
COUNTED = ("done", "failed")


def _match(start: dt.datetime, end: dt.datetime) -> Document:
    return {"$match": {"finished": {"$gte": start, "$lt": end}, "state": {"$in": list(COUNTED)}}}


async def _aggregate(db: AsyncDatabase[Document], stages: list[Document]) -> list[Document]:
    with database_errors():
        cursor = await db[REQUESTS].aggregate(stages)  # Index: requests_by_finished.
        return await cursor.to_list()


async def _counts(db: AsyncDatabase[Document], start: dt.datetime, end: dt.datetime) -> list[Document]:
    """Requests and bytes per activity and state in [start, end). Two aggregations of one
    accumulator each: FerretDB 1.24 computes only the first accumulator of a `$group`."""
    key = {"activity": "$activity", "state": "$state"}
    counted, summed = await asyncio.gather(
        _aggregate(db, [_match(start, end), {"$group": {"_id": key, "n": {"$sum": 1}}}]),
        _aggregate(db, [_match(start, end), {"$group": {"_id": key, "bytes": {"$sum": "$result.bytes"}}}]))
    nbytes = {(r["_id"].get("activity"), r["_id"]["state"]): r["bytes"] for r in summed}
    return [{**r, "bytes": nbytes.get((r["_id"].get("activity"), r["_id"]["state"]), 0)} for r in counted]


def _bucket_start(at: dt.datetime, step_hours: int) -> dt.datetime:
    hour = at.replace(minute=0, second=0, microsecond=0)
    return hour.replace(hour=0) if step_hours % 24 == 0 else hour


async def activity_series(db: AsyncDatabase[Document], *, hours: int = 48, step_hours: int = 1,
                          now: dt.datetime | None = None) -> dict[str, Any]:
    """Requests finished per activity over the last `hours`, in buckets of `step_hours` (oldest
    first): `{"buckets": [epoch s], "activities": {name: {"done": [...], "failed": [...],
    "mb": [...]}}, "totals": [{"activity", "done", "failed", "bytes"}]}`."""
    if not 1 <= hours <= MAX_HOURS or step_hours < 1:
        raise InvalidInput(f"hours must be 1..{MAX_HOURS} and step_hours at least 1")
    count = -(-hours // step_hours)
    if count > MAX_BUCKETS:
        raise InvalidInput(f"{count} buckets asked for; at most {MAX_BUCKETS} (raise step_hours)")
    step = dt.timedelta(hours=step_hours)
    first = _bucket_start(now or dt.datetime.now(dt.UTC), step_hours) - step * (count - 1)
    starts = [first + step * i for i in range(count)]
    rows = await asyncio.gather(*(_counts(db, s, s + step) for s in starts))
    names = sorted({str(r["_id"].get("activity")) for bucket in rows for r in bucket})
    series: dict[str, dict[str, list[Any]]] = {n: {"done": [0] * count, "failed": [0] * count, "mb": [0.0] * count}
                                               for n in names}
    totals: dict[str, dict[str, Any]] = {n: {"activity": n, "done": 0, "failed": 0, "bytes": 0} for n in names}
    for i, bucket in enumerate(rows):
        for row in bucket:
            name, state = str(row["_id"].get("activity")), row["_id"]["state"]
            series[name][state][i] += int(row["n"])
            totals[name][state] += int(row["n"])
            if state == "done":
                series[name]["mb"][i] = round(int(row.get("bytes") or 0) / 1e6, 3)
                totals[name]["bytes"] += int(row.get("bytes") or 0)
    return {"buckets": [int(s.timestamp()) for s in starts], "step_hours": step_hours, "activities": series,
            "totals": list(totals.values())}
