"""Transfer statistics per link (source SE → destination SE), kept in MongoDB so that any
stateless API server can report them: every worker adds what it did with one `$inc` upsert per
finished transfer, and the queue's depths are counted from the requests themselves.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, database_errors, increment
from transfers.link_series import record_hour
from transfers.requests import REQUESTS

LINK_STATS = "link_stats"


def link_id(source: str, dest: str) -> str:
    return f"{source}>{dest}"


async def record(
    db: AsyncDatabase[Document], source: str, dest: str, *, ok: bool, nbytes: int = 0, seconds: float = 0.0,
    mode: str | None = None, reason: str | None = None, activity: str = "default",
) -> None:
    """Add one finished transfer (or failed attempt) to its link's counters (and its activity's)."""
    at = dt.datetime.now(dt.UTC)
    inc: dict[str, Any] = {"done": 1, "bytes": nbytes, "seconds": seconds} if ok else {"failed": 1}
    if ok and mode:
        inc[f"mode.{mode}"] = 1
    if not ok:
        inc[f"failures.{reason or 'other'}"] = 1
    with database_errors():
        await db[LINK_STATS].update_one(
            {"_id": link_id(source, dest)},
            {**increment(inc), "$set": {"source": source, "dest": dest, "last": at}, "$setOnInsert": {"first": at}},
            upsert=True,
        )
    await record_hour(db, source, dest, ok=ok, nbytes=nbytes, at=at, activity=activity)


async def link_statistics(db: AsyncDatabase[Document]) -> list[Document]:
    """Every link's counters, with its throughput: bytes over the time copies took (per-transfer
    rate times concurrency) and over the wall-clock span between its first and last transfer."""
    with database_errors():
        docs = await db[LINK_STATS].find({}).sort("_id", 1).to_list()
    out = []
    for doc in docs:
        span = ((doc["last"] - doc["first"]).total_seconds()) if doc.get("first") and doc.get("last") else 0.0
        done, nbytes, seconds = doc.get("done", 0), doc.get("bytes", 0), doc.get("seconds", 0.0)
        out.append({
            "source": doc["source"], "dest": doc["dest"], "done": done, "failed": doc.get("failed", 0),
            "bytes": nbytes, "copy_seconds": round(seconds, 3),
            "mean_file_mb_s": round(nbytes / seconds / 1e6, 3) if seconds > 0 else None,
            "wall_mb_s": round(nbytes / span / 1e6, 3) if span > 0 else None,
            "modes": doc.get("mode", {}), "failures": doc.get("failures", {}),
            "first": doc.get("first"), "last": doc.get("last"),
        })
    return out


async def queue_depths(db: AsyncDatabase[Document]) -> list[Document]:
    """Requests counted by kind and state, and queued transfers by destination SE."""
    with database_errors():
        cursor = await db[REQUESTS].aggregate([
            {"$group": {"_id": {"kind": "$kind", "state": "$state", "dest_se": "$dest_se"}, "n": {"$sum": 1}}},
        ])
        rows = await cursor.to_list()
    return sorted(
        ({"kind": r["_id"].get("kind"), "state": r["_id"].get("state"), "dest_se": r["_id"].get("dest_se"),
          "requests": r["n"]} for r in rows),
        key=lambda r: (str(r["kind"]), str(r["state"]), str(r["dest_se"])),
    )


async def failures_by_reason(db: AsyncDatabase[Document]) -> dict[str, int]:
    """Failed attempts summed over links, by reason."""
    totals: dict[str, int] = {}
    for link in await link_statistics(db):
        for reason, n in link["failures"].items():
            totals[reason] = totals.get(reason, 0) + n
    return totals
