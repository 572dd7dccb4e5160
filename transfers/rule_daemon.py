"""The loop the rule daemons share: take rules one at a time under each rule's own lease
(`catalogue.rules.claim`), work on each, give it back. A subclass says which rules (`query`), in
which order (`sort`), and what to do with one (`work_on`, which must release or remove it).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import rules
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.settings import Settings

RULES_PER_CYCLE = 20


class RuleDaemon(Daemon):
    sort = "due"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.rules
        self.idle_sleep_s = settings.rules.idle_sleep_s

    @abstractmethod
    def query(self) -> dict[str, Any]:
        """The rules this daemon has work on now."""

    @abstractmethod
    async def work_on(self, rule: Document) -> int:
        """Work on one claimed rule and give it back; returns how much was done (0: nothing)."""

    async def run_once(self) -> int:
        handled = 0
        for _ in range(RULES_PER_CYCLE):
            if self.stopping:
                break
            rule = await rules.claim(self.db, self.worker, self.query(), lease_s=self.settings.lease_s, sort=self.sort)
            if rule is None:
                break
            handled += await self.work_on(rule)
        return handled
