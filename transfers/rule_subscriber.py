"""`cairn daemon rule-subscriptions`: gives new datasets the rules of the subscriptions they
match (see `catalogue.subscriptions`). One daemon at a time works on a subscription (a named
lease "subscription:NAME"); creating a rule twice is harmless (its id is deterministic)."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import subscriptions
from kernel import lease
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.settings import Settings


class RuleSubscriber(Daemon):
    name = "rule-subscriptions"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.rules
        self.idle_sleep_s = settings.rules.idle_sleep_s

    async def run_once(self) -> int:
        made = 0
        for subscription in await subscriptions.list_subscriptions(self.db):
            _, count = await lease.under_named_lease(
                self.db, f"subscription:{subscription['_id']}", self.worker,
                subscriptions.process(self.db, subscription), lease_s=self.settings.lease_s)
            made += count or 0
        return made
