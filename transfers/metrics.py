"""Prometheus metric families of the transfer system, read from MongoDB on each scrape so any
stateless API server can serve them (`cairn.metrics` serves `GET /metrics`). Every series
carries the `vo` of the requests it counts, so a VO's caller can be shown its own only."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from transfers.link_stats import link_statistics_by_vo, queue_depths

Family = CounterMetricFamily | GaugeMetricFamily


async def families(db: AsyncDatabase[Document]) -> list[Family]:
    """The transfer metric families as the database has them now."""
    link = ["source", "dest", "vo"]
    done = CounterMetricFamily("cairn_transfers_done", "Transfers completed per link", labels=link)
    failed = CounterMetricFamily("cairn_transfers_failed", "Failed transfer attempts per link and reason",
                                 labels=[*link, "reason"])
    nbytes = CounterMetricFamily("cairn_transfer_bytes", "Bytes transferred per link", labels=link)
    seconds = CounterMetricFamily("cairn_transfer_seconds", "Time spent copying per link (sum over transfers)",
                                  labels=link)
    for stats in await link_statistics_by_vo(db):
        key = [stats["source"], stats["dest"], stats["vo"]]
        done.add_metric(key, stats["done"])
        nbytes.add_metric(key, stats["bytes"])
        seconds.add_metric(key, stats["seconds"])
        for reason, n in stats["failures"].items():
            failed.add_metric([*key, reason], n)
    requests = GaugeMetricFamily("cairn_requests", "Requests by kind, state and destination SE",
                                 labels=["kind", "state", "dest_se", "vo"])
    for row in await queue_depths(db, by_vo=True):
        requests.add_metric([str(row["kind"]), str(row["state"]), str(row["dest_se"] or ""), row["vo"]],
                            row["requests"])
    return [done, failed, nbytes, seconds, requests]
