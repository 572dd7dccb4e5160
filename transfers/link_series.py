"""Transfers over time: per link, activity and hour, files done and failed and bytes moved,
counted with one `$inc` upsert per link, activity and worker cycle (beside the link's totals in
`link_stats`), so that a plot of the last hours reads a few documents per link instead of the requests.

A count made under an id (a worker's settling: `counted_once`) is added once: the document
remembers the last SETTLES_KEPT ids added to it, so a write tried again after its reply was lost
(it had landed) changes nothing the second time."""

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


SETTLES = "settles"  # the ids of the last counts added to a document (`counted_once`)
SETTLES_KEPT = 64  # a retry comes at the worker's next settling: far fewer counts land meanwhile


def counted_once(doc_id: str, fields: Mapping[str, Any], inc: Mapping[str, int | float], token: str | None,
                 on_insert: Mapping[str, Any] | None = None) -> list[UpdateOne]:
    """The writes adding `inc` to the counters of document doc_id (made with `fields`), once
    for `token`: an upsert that makes the document, then the `$inc` guarded by the token not
    being among the document's last SETTLES_KEPT (both in one ordered bulk). Guarding the upsert
    itself would make a retry's upsert hit the `_id`. Without a token, one unguarded upsert."""
    made = {"$set": dict(fields), **({"$setOnInsert": dict(on_insert)} if on_insert else {})}
    if token is None:
        return [UpdateOne({"_id": doc_id}, {**increment(inc), **made}, upsert=True)]
    return [UpdateOne({"_id": doc_id}, made, upsert=True),
            UpdateOne({"_id": doc_id, SETTLES: {"$ne": token}},
                      {**increment(inc), "$push": {SETTLES: {"$each": [token], "$slice": -SETTLES_KEPT}}})]


def _hour(at: dt.datetime) -> dt.datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def record_hour(db: AsyncDatabase[Document], source: str, dest: str, *, ok: bool, nbytes: int,
                      at: dt.datetime, activity: str = "default") -> None:
    """Add one finished transfer (or failed attempt) to its link's counters of the hour `at`."""
    await record_hours(db, {(source, dest, activity): {"done": 1, "bytes": nbytes} if ok else {"failed": 1}}, at=at)


PerLink = Mapping[tuple[str, str, str], Mapping[str, Any]]


def hour_updates(per_link: PerLink, *, at: dt.datetime, token: str | None = None) -> list[UpdateOne]:
    """The writes adding finished transfers (their `done`, `failed` and `bytes` per link and
    activity) to the counters of the hour `at`, once for `token` (`counted_once`)."""
    hour = _hour(at)
    updates = []
    for (source, dest, activity), totals in per_link.items():
        inc = {name: totals[name] for name in ("done", "failed", "bytes") if totals.get(name)}
        if inc:
            updates += counted_once(f"{source}>{dest}#{activity}@{hour:%Y%m%d%H}",
                                    {"source": source, "dest": dest, "activity": activity, "hour": hour}, inc, token)
    return updates


async def record_hours(db: AsyncDatabase[Document], per_link: PerLink, *, at: dt.datetime) -> None:
    """Add finished transfers to the counters of the hour `at` (`hour_updates`), in one bulk write."""
    if updates := hour_updates(per_link, at=at):
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
        docs = await db[LINK_HOURS].find(query, {SETTLES: 0}).to_list()  # Index: link_hours_by_hour.
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
