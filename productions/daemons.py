"""The transformation daemons: thin loops over feeding, task creation and submission, and
monitoring. Any number of instances run: the feed has one lease, and each transformation one
lease per daemon, so two instances never work on the same transformation at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel import lease
from kernel.daemon import Daemon, one_of_many
from kernel.db import Document
from productions import feeding, monitoring, production, task_creation, task_submission, transformations

LEASE_S = 60.0  # the default of `kernel.settings.ProductionSettings.lease_s`
log = logging.getLogger("cairn.productions")


class _PerTransformation(Daemon):
    idle_sleep_s = 1.0
    states: tuple[str, ...] = transformations.RUNNING

    def __init__(self, db: AsyncDatabase[Document], *, lease_s: float = LEASE_S) -> None:
        super().__init__()
        self.db = db
        self.lease_s = lease_s

    async def each(self, work: Callable[[Document], Coroutine[Any, Any, int]]) -> int:
        handled = 0
        for doc in await transformations.running(self.db, self.states):
            handled += await self._isolated(doc, work)
        return handled

    async def _isolated(self, doc: Document, work: Callable[[Document], Coroutine[Any, Any, int]]) -> int:
        """One transformation's work under its lease (`kernel.daemon.one_of_many`: its error is
        logged and the others go on; the database down stops the pass)."""
        work_under_lease = lease.under_named_lease(self.db, f"{self.name}:{doc['_id']}", self.worker, work(doc),
                                                   lease_s=self.lease_s)
        outcome, _ = await one_of_many(work_under_lease, f"{self.name}: transformation {doc['_id']}", log)
        return (outcome[1] or 0) if outcome else 0


class TransformationFeeder(_PerTransformation):
    """Feeds transformations: the change feed's new events, and the initial query of new ones."""

    name = "transformation-feeder"
    states = ("new",)

    async def run_once(self) -> int:
        handled = await feeding.follow(self.db, self.worker, lease_s=self.lease_s)
        return handled + await self.each(lambda doc: feeding.initial_feed(self.db, doc))


class TransformationTasks(_PerTransformation):
    """Makes tasks of unused files and submits them as jobs."""

    name = "transformation-tasks"
    states = ("active", "flushing")

    async def _work(self, doc: Document) -> int:
        made = await task_creation.create_tasks(self.db, doc)  # (ends the flush it made)
        return made + await task_submission.submit_tasks(self.db, doc)

    async def run_once(self) -> int:
        return await self.each(self._work)


class TransformationMonitor(_PerTransformation):
    """Follows the jobs of submitted tasks (of stopped transformations too: their running jobs)."""

    name = "transformation-monitor"
    states = ("active", "flushing", "stopped")

    async def _work(self, doc: Document) -> int:
        changed = await monitoring.follow_tasks(self.db, doc)
        return changed + int(await production.advance(self.db, doc))

    async def run_once(self) -> int:
        return await self.each(self._work)
