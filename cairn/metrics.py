"""`GET /metrics`: the Prometheus exposition of the whole installation, read from MongoDB on
each scrape (any stateless API server serves it).

Every series that counts a VO's things (transfers, requests, jobs, rules, namespace usage)
carries a `vo` label. Who sees what:
- a single-VO installation (no VO, or one registered): everyone, with or without a token, as
  before VOs existed;
- a global admin: every series;
- a caller confined to one VO among several (its members and admins): the series of its VO
  only, so no other VO's label value or count shows;
- no token on a multi-VO installation: 401 (a scraper sends a global admin's or a VO's token).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage, vos
from kernel.db import Document
from kernel.errors import Unauthenticated
from kernel.principal import DEFAULT_VO, Principal
from kernel.web import DATABASE, PRINCIPAL
from rules import store as rule_store
from transfers import metrics as transfer_metrics
from wms import job_reads


class _Snapshot(Collector):
    """Metric families computed before the scrape (prometheus-client collects synchronously)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def vo_families(db: AsyncDatabase[Document]) -> list[Metric]:
    """Jobs and rules per VO and state, and the namespace's files and bytes per VO."""
    job_family = GaugeMetricFamily("cairn_jobs", "Jobs by VO and state", labels=["vo", "state"])
    for row in await job_reads.count_by_vo_and_state(db):
        job_family.add_metric([row["vo"], str(row["state"])], row["n"])
    rule_family = GaugeMetricFamily("cairn_rules", "Replication rules by VO and state", labels=["vo", "state"])
    for row in await rule_store.count_by_vo_and_state(db):
        rule_family.add_metric([row["vo"], str(row["state"])], row["n"])
    registered = await vos.registry(db)
    roots = {name: vo.roots for name, vo in registered.items()} or {DEFAULT_VO: ["/"]}
    files = GaugeMetricFamily("cairn_namespace_files", "Files below the VO's namespace roots", labels=["vo"])
    nbytes = GaugeMetricFamily("cairn_namespace_bytes", "Bytes of the files below the VO's namespace roots",
                               labels=["vo"])
    for vo, counts in sorted((await usage.vo_usage(db, roots)).items()):
        files.add_metric([vo], counts["files"])
        nbytes.add_metric([vo], counts["bytes"])
    return [job_family, rule_family, files, nbytes]


def require_view(principal: Principal | None, vo_count: int) -> None:
    """401 for a scrape without a token on an installation of several VOs."""
    if principal is None and vo_count > 1:
        raise Unauthenticated("this installation serves several VOs: /metrics needs a bearer token")


def visible(families: list[Metric], principal: Principal | None, vo_count: int) -> list[Metric]:
    """The families and samples the caller may see (see the module docstring): a confined
    caller of one VO among several gets the samples labelled with its VO, and no family
    without a `vo` label (installation totals)."""
    require_view(principal, vo_count)
    if principal is None or vo_count <= 1 or not principal.confined:
        return families
    kept = []
    for family in families:
        if all("vo" in sample.labels for sample in family.samples):
            family.samples = [s for s in family.samples if s.labels["vo"] == principal.vo]
            kept.append(family)
    return kept


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics`: the Prometheus exposition of what the caller may see."""
    db = request.app[DATABASE]
    vo_count = len(await vos.registry(db))
    principal = request.get(PRINCIPAL)
    require_view(principal, vo_count)  # before the database work
    families = [*await transfer_metrics.families(db), *await vo_families(db)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(visible(families, principal, vo_count)))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
