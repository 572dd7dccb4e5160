"""Transfers over time: per link, activity and hour, files done and failed and bytes moved,
counted with one `$inc` upsert per link, activity and worker cycle (beside the link's totals in
`link_stats`), so that a plot of the last hours reads a few documents per link instead of the requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, IndexSpec, bulk_write_chunked, database_errors, increment

LINK_HOURS = "link_hours"
INDEXES = [IndexSpec(LINK_HOURS, [("hour", 1)], name="link_hours_by_hour")]
MAX_HOURS = 24 * 90


def _hour(at: dt.datetime) -> dt.datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def record_hour(db: AsyncDatabase[Document], source: str, dest: str, *, ok: bool, nbytes: int,
                      at: dt.datetime, activity: str = "default") -> None:
    """Add one finished transfer (or failed attempt) to its link's counters of the hour `at`."""
    await record_hours(db, {(source, dest, activity): {"done": 1, "bytes": nbytes} if ok else {"failed": 1}}, at=at)


async def record_hours(db: AsyncDatabase[Document], per_link: Mapping[tuple[str, str, str], Mapping[str, Any]], *,
                       at: dt.datetime) -> None:
    """Add finished transfers (their `done`, `failed` and `bytes` per link and activity) to the
    counters of the hour `at`: one upsert per link and activity, in one bulk write."""
    hour = _hour(at)
    updates = []
    for (source, dest, activity), totals in per_link.items():
        inc = {name: totals[name] for name in ("done", "failed", "bytes") if totals.get(name)}
        if inc:
            updates.append(UpdateOne(
                {"_id": f"{source}>{dest}#{activity}@{hour:%Y%m%d%H}"},
                {**increment(inc), "$set": {"source": source, "dest": dest, "activity": activity, "hour": hour}},
                upsert=True))
    if updates:
        await bulk_write_chunked(db[LINK_HOURS], updates)


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
