"""Prometheus metrics of the transfer system, read from MongoDB on each scrape so any stateless
API server can serve them (`GET /metrics`, prometheus-client's text format)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.web import DATABASE
from transfers.link_stats import link_statistics, queue_depths

Family = CounterMetricFamily | GaugeMetricFamily


class _Snapshot(Collector):
    """Metric families computed before the scrape (prometheus-client collects synchronously)."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterable[Family]:
        return self.families


async def families(db: AsyncDatabase[Document]) -> list[Family]:
    """The transfer metric families as the database has them now."""
    link = ["source", "dest"]
    done = CounterMetricFamily("cairn_transfers_done", "Transfers completed per link", labels=link)
    failed = CounterMetricFamily("cairn_transfers_failed", "Failed transfer attempts per link and reason",
                                 labels=[*link, "reason"])
    nbytes = CounterMetricFamily("cairn_transfer_bytes", "Bytes transferred per link", labels=link)
    seconds = CounterMetricFamily("cairn_transfer_seconds", "Time spent copying per link (sum over transfers)",
                                  labels=link)
    for stats in await link_statistics(db):
        key = [stats["source"], stats["dest"]]
        done.add_metric(key, stats["done"])
        nbytes.add_metric(key, stats["bytes"])
        seconds.add_metric(key, stats["copy_seconds"])
        for reason, n in stats["failures"].items():
            failed.add_metric([*key, reason], n)
    requests = GaugeMetricFamily("cairn_requests", "Requests by kind, state and destination SE",
                                 labels=["kind", "state", "dest_se"])
    for row in await queue_depths(db):
        requests.add_metric([str(row["kind"]), str(row["state"]), str(row["dest_se"] or "")], row["requests"])
    return [done, failed, nbytes, seconds, requests]


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics`: the Prometheus exposition of the transfer metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(await families(request.app[DATABASE])))
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
