"""Accounting of transfers by activity over time: files done, failed attempts and MB moved per
activity, in buckets of whole hours, and their totals.

It reads the per-link, per-activity hourly counters of `link_series` (one `$inc` per finished
transfer, so a plot never reads the requests) and adds them up per activity and hour with
MongoDB aggregation (`$match` on the hour, index link_hours_by_hour, then `$group`); buckets of
several hours are folded from those rows. Counters written before activities were recorded
count as activity "default".
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, database_errors
from kernel.errors import InvalidInput
from transfers.link_series import LINK_HOURS

MAX_HOURS = 24 * 90
MAX_BUCKETS = 120
FIELDS = ("done", "failed", "bytes")


async def _summed(db: AsyncDatabase[Document], start: dt.datetime, field: str) -> list[Document]:
    """One counter summed per activity and hour since `start`. One accumulator per `$group`:
    FerretDB 1.24 computes only the first accumulator of a `$group`."""
    key = {"activity": "$activity", "hour": "$hour"}
    stages: list[Document] = [{"$match": {"hour": {"$gte": start}}},
                              {"$group": {"_id": key, "v": {"$sum": f"${field}"}}}]
    with database_errors():
        cursor = await db[LINK_HOURS].aggregate(stages)  # Index: link_hours_by_hour.
        return await cursor.to_list()


def _bucket_start(at: dt.datetime, step_hours: int) -> dt.datetime:
    hour = at.replace(minute=0, second=0, microsecond=0)
    return hour.replace(hour=0) if step_hours % 24 == 0 else hour


async def activity_series(db: AsyncDatabase[Document], *, hours: int = 48, step_hours: int = 1,
                          now: dt.datetime | None = None) -> dict[str, Any]:
    """Transfers per activity over the last `hours`, in buckets of `step_hours` (oldest first):
    `{"buckets": [epoch s], "step_hours", "activities": {name: {"done": [...], "failed": [...],
    "mb": [...]}}, "totals": [{"activity", "done", "failed", "bytes"}]}`."""
    if not 1 <= hours <= MAX_HOURS or step_hours < 1:
        raise InvalidInput(f"hours must be 1..{MAX_HOURS} and step_hours at least 1")
    count = -(-hours // step_hours)
    if count > MAX_BUCKETS:
        raise InvalidInput(f"{count} buckets asked for; at most {MAX_BUCKETS} (raise step_hours)")
    step = dt.timedelta(hours=step_hours)
    first = _bucket_start(now or dt.datetime.now(dt.UTC), step_hours) - step * (count - 1)
    rows = dict(zip(FIELDS, await asyncio.gather(*(_summed(db, first, f) for f in FIELDS)), strict=True))
    names = sorted({str(r["_id"].get("activity") or "default") for found in rows.values() for r in found})
    counts = {n: {f: [0] * count for f in FIELDS} for n in names}
    for field, found in rows.items():
        for row in found:
            hour = row["_id"]["hour"]
            hour = hour.replace(tzinfo=dt.UTC) if hour.tzinfo is None else hour
            index = int((hour - first) // step)
            if 0 <= index < count:
                counts[str(row["_id"].get("activity") or "default")][field][index] += int(row["v"] or 0)
    return {"buckets": [int((first + step * i).timestamp()) for i in range(count)], "step_hours": step_hours,
            "activities": {n: {"done": c["done"], "failed": c["failed"], "mb": [round(b / 1e6, 3) for b in c["bytes"]]}
                           for n, c in counts.items()},
            "totals": [{"activity": n, "done": sum(c["done"]), "failed": sum(c["failed"]), "bytes": sum(c["bytes"])}
                       for n, c in counts.items()]}
