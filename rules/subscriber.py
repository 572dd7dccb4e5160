"""`cairn daemon rule-subscriptions`: gives new datasets the rules of the subscriptions they
match (see `rules.subscriptions`), reading the `did_created` events of the catalogue's
change feed under its lease (one daemon at a time reads it); creating a rule twice is harmless
(its id is deterministic), and counting it twice does not happen (it is counted by its event,
`rules.subscription_counts`), so events seen again after a crash do no harm. Each pass (at most
once per ANNOUNCE_EVERY_S) first announces the datasets whose creation was cut short before
their event (`catalogue.datasets.announce_late`)."""

from __future__ import annotations

import time

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, datasets
from kernel.daemon import Daemon
from kernel.db import Document
from kernel.settings import Settings
from rules import subscriptions

CONSUMER = "rule-subscriptions"
ANNOUNCE_EVERY_S = datasets.ANNOUNCE_GRACE.total_seconds() / 3


class RuleSubscriber(Daemon):
    name = "rule-subscriptions"

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.rules
        self.idle_sleep_s = settings.rules.idle_sleep_s
        self.announced_at = -ANNOUNCE_EVERY_S

    async def run_once(self) -> int:
        made = 0
        if time.monotonic() - self.announced_at >= ANNOUNCE_EVERY_S:
            await datasets.announce_late(self.db)
            self.announced_at = time.monotonic()

        async def handle(events: list[change_feed.Event]) -> None:
            nonlocal made
            created = [e for e in events if e["kind"] == "did_created"]
            made += await subscriptions.apply_to_new(self.db, [e["did"] for e in created], [e["_id"] for e in created])

        await change_feed.consume(self.db, CONSUMER, self.worker, handle, lease_s=self.settings.lease_s)
        return made
