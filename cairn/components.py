"""What the processes are made of: every package's route tables, indexes, daemons, and the open
work a VO's deletion waits for.

Adding a capability means adding its routes, indexes or daemon here — nowhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from cairn import system_routes, vo_migration
from catalogue import (
    dataset_contents,
    dataset_count_claims,
    datasets,
    directories,
    files,
    moved_paths,
    replica_triage,
    storage_elements,
    usage,
)
from catalogue.vo_removal import OpenWork
from kernel import revocations
from kernel.daemon import Daemon
from kernel.db import Document, IndexSpec
from kernel.settings import Settings
from kernel.web import ApiRoutes
from productions import production, transformation_files, transformations
from productions import tasks as production_tasks
from rules import locks as rule_locks
from rules import quotas, subscriptions
from rules import store as rule_store
from transfers import audit_runs, link_series, request_reads
from transfers import requests as transfer_requests
from wms import job_reads
from wms import jobs as wms_jobs
from wms import pilot_records as wms_pilot_records
from wms import task_queues as wms_task_queues

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DaemonFactory = Callable[[Settings, AsyncDatabase[Document]], Daemon]


def route_tables() -> list[ApiRoutes]:
    from catalogue import (
        dataset_routes,
        feed_routes,
        file_routes,
        identity_routes,
        metadata_routes,
        namespace_routes,
        provenance_routes,
        se_routes,
        site_queue_routes,
        usage_routes,
        vo_routes,
    )
    from kernel import revocation_routes
    from productions import production_routes, transformation_routes
    from rules import routes as rule_routes
    from rules import subscription_routes
    from transfers import (
        audit_routes,
        request_routes,
        share_routes,
        signed_url_routes,
        stats_routes,
        suspicious_routes,
    )
    from wms import pilot_routes
    from wms import routes as wms_routes

    return [system_routes.routes, namespace_routes.routes, file_routes.routes, se_routes.routes,
            metadata_routes.routes, dataset_routes.routes, provenance_routes.routes, usage_routes.routes,
            rule_routes.routes, subscription_routes.routes, request_routes.routes, signed_url_routes.routes,
            stats_routes.routes, share_routes.routes, wms_routes.routes, feed_routes.routes, audit_routes.routes,
            suspicious_routes.routes, transformation_routes.routes, production_routes.routes,
            site_queue_routes.routes, pilot_routes.routes, vo_routes.routes, identity_routes.routes,
            vo_migration.routes, revocation_routes.routes]


def plain_routes() -> list[tuple[str, str, Handler]]:
    """Routes outside /api/v1 (method, path, handler): what monitoring scrapes."""
    from cairn.metrics import metrics_handler

    return [("GET", "/metrics", metrics_handler)]


def index_specs() -> list[IndexSpec]:
    return [*storage_elements.INDEXES, *directories.INDEXES, *files.INDEXES, *datasets.INDEXES,
            *dataset_contents.INDEXES, *dataset_count_claims.INDEXES, *transfer_requests.INDEXES,
            *rule_store.INDEXES, *rule_locks.INDEXES,
            *quotas.INDEXES, *subscriptions.INDEXES, *wms_jobs.INDEXES, *wms_task_queues.INDEXES,
            *usage.INDEXES, *replica_triage.INDEXES, *link_series.INDEXES,
            *audit_runs.INDEXES, *transformations.INDEXES, *transformation_files.INDEXES,
            *production_tasks.INDEXES, *production.INDEXES, *wms_pilot_records.INDEXES, *moved_paths.INDEXES,
            *revocations.INDEXES]


def open_work() -> tuple[OpenWork, ...]:
    """A VO's work that `cairn vo delete` waits for, each kind counted by its package, with the
    command that ends it."""
    return (OpenWork("open job(s)", "cairn job kill", job_reads.count_open_of_vo),
            OpenWork("rule(s)", "cairn rule delete", rule_store.count_open_of_vo),
            OpenWork("open transfer, stage or deletion request(s)", "cairn requests cancel",
                     request_reads.count_open_of_vo),
            OpenWork("subscription(s)", "cairn subscription delete", subscriptions.count_of_vo),
            OpenWork("transformation(s) not completed or cleaned",
                     "cairn transformation delete, or cairn production delete for a production's steps",
                     transformations.count_open_of_vo))


def daemon_factories() -> dict[str, DaemonFactory]:
    """Daemons by the name `cairn daemon NAME` knows them; `cairn up` runs every one."""
    from productions.daemons import TransformationFeeder, TransformationMonitor, TransformationTasks
    from rules.cleaner import RuleCleaner
    from rules.evaluator import RuleEvaluator
    from rules.repairer import RuleRepairer
    from rules.subscriber import RuleSubscriber
    from transfers.auditor import Auditor
    from transfers.reaper import Reaper
    from transfers.stager import Stager
    from transfers.worker import TransferWorker
    from wms.config import wms_settings
    from wms.daemons import JobChecker, JobWatchdog

    return {
        "transfers": TransferWorker,
        "stager": Stager,
        "reaper": Reaper,
        "rule-evaluator": RuleEvaluator,
        "rule-repairer": RuleRepairer,
        "rule-cleaner": RuleCleaner,
        "rule-subscriptions": RuleSubscriber,
        "job-checker": lambda settings, db: JobChecker(db, wms_settings()),
        "job-watchdog": lambda settings, db: JobWatchdog(db, wms_settings()),
        "transformation-feeder": lambda settings, db: TransformationFeeder(db, lease_s=settings.productions.lease_s),
        "transformation-tasks": lambda settings, db: TransformationTasks(db, lease_s=settings.productions.lease_s),
        "transformation-monitor": lambda settings, db: TransformationMonitor(db, lease_s=settings.productions.lease_s),
        "pilot-factory": _pilot_factory,
        "auditor": Auditor,
    }


def _pilot_factory(settings: Settings, db: AsyncDatabase[Document]) -> Daemon:
    from kernel.tokens import BuiltinIssuer
    from wms.pilot_factory import FactorySettings, PilotFactory

    return PilotFactory(db, settings, FactorySettings(), BuiltinIssuer.from_settings(settings))
