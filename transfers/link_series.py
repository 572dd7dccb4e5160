"""Transfers over time: per link, activity and hour, files done and failed and bytes moved,
counted with one `$inc` upsert per finished transfer (beside the link's totals in `link_stats`),
so that a plot of the last hours reads a few documents per link instead of the requests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, IndexSpec, database_errors, increment

LINK_HOURS = "link_hours"
INDEXES = [IndexSpec(LINK_HOURS, [("hour", 1)], name="link_hours_by_hour")]
MAX_HOURS = 24 * 90


def _hour(at: dt.datetime) -> dt.datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def record_hour(db: AsyncDatabase[Document], source: str, dest: str, *, ok: bool, nbytes: int,
                      at: dt.datetime, activity: str = "default") -> None:
    """Add one finished transfer (or failed attempt) to its link's counters of the hour `at`, one
    document per link, activity and hour (so accounting can count by activity too)."""
    hour = _hour(at)
    inc: dict[str, Any] = {"done": 1, "bytes": nbytes} if ok else {"failed": 1}
    with database_errors():
        await db[LINK_HOURS].update_one(
            {"_id": f"{source}>{dest}#{activity}@{hour:%Y%m%d%H}"},
            {**increment(inc), "$set": {"source": source, "dest": dest, "activity": activity, "hour": hour}},
            upsert=True,
        )


async def hourly_series(db: AsyncDatabase[Document], *, hours: int = 48, source: str | None = None,
                        dest: str | None = None, now: dt.datetime | None = None) -> dict[str, list[Any]]:
    """The last `hours` hours (every hour present, oldest first) summed over the links chosen:
    `{"hours": [epoch seconds], "done": [...], "failed": [...], "mb": [...]}`."""
    end = _hour(now or dt.datetime.now(dt.UTC))
    start = end - dt.timedelta(hours=hours - 1)
    query: dict[str, Any] = {"hour": {"$gte": start}}
    query.update({k: v for k, v in {"source": source, "dest": dest}.items() if v})
    with database_errors():
        docs = await db[LINK_HOURS].find(query).to_list()  # Index: link_hours_by_hour.
    slots = [start + dt.timedelta(hours=i) for i in range(hours)]
    done, failed, nbytes = dict.fromkeys(slots, 0), dict.fromkeys(slots, 0), dict.fromkeys(slots, 0)
    for doc in docs:
        hour = doc["hour"].replace(tzinfo=dt.UTC) if doc["hour"].tzinfo is None else doc["hour"]
        if hour in done:
            done[hour] += int(doc.get("done", 0))
            failed[hour] += int(doc.get("failed", 0))
            nbytes[hour] += int(doc.get("bytes", 0))
    return {"hours": [int(h.timestamp()) for h in slots], "done": list(done.values()),
            "failed": list(failed.values()), "mb": [round(nbytes[h] / 1e6, 3) for h in slots]}
