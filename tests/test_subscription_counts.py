"""A subscription's `rules_created` counts each rule it made once (eighth fixes): the subscriber
made a rule, then counted it in a second write, so one cut short in between (a killed daemon)
never counted it: its retry met the rule made already and counted nothing. Reproduced by
cancelling the subscriber at a random moment of its pass and letting it run again, a few hundred
times; and a pass handled again (a daemon killed after its writes and before it saved its place
in the change feed) counts nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import datasets
from catalogue.datasets import DidIn
from kernel.db import Document
from kernel.settings import Settings
from rules import subscriptions
from rules.subscriber import CONSUMER, RuleSubscriber
from rules.subscriptions import RuleTemplate, SubscriptionIn, add_subscription
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import rule_settings, tiered_ses

# Before its fix 26-32 of 120 cut-short passes miscounted: at 26/120, 30 rounds miss it with p < 0.1%.
ROUNDS = 30
CONCURRENT_ROUNDS = 60  # as before (no fail-before rate was recorded for it)
PER_ROUND = 2


async def _counts(db: AsyncDatabase[Document]) -> tuple[int, int]:
    """(the subscription's `rules_created`, the rules it made)."""
    stored = await db["subscriptions"].find_one({"_id": "all"})
    assert stored is not None
    return int(stored["rules_created"]), await db["rules"].count_documents({"subscription": "all"})


async def _subscribed(db: AsyncDatabase[Document], tmp_path: Path) -> None:
    await tiered_ses(db, tmp_path)
    await add_subscription(db, ADMIN, SubscriptionIn(name="all", rule=RuleTemplate(copies=1, expression="tier=1")))


async def test_a_subscriber_cut_short_counts_every_rule_it_made_once(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await _subscribed(database, tmp_path)
    subscriber = RuleSubscriber(rule_settings(settings), database)
    drifted = before = 0
    for round_ in range(ROUNDS):
        for i in range(PER_ROUND):
            await datasets.create_did(database, ADMIN, DidIn(did=f"vo:r{round_}.{i}"))
        cut = asyncio.create_task(subscriber.run_once())
        await asyncio.sleep(random.random() * 0.03)
        cut.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cut
        await subscriber.run_once()  # the daemon's next pass (or its successor's)
        counted, made = await _counts(database)
        assert made == PER_ROUND * (round_ + 1)
        drifted += counted - before != PER_ROUND
        before = counted
    assert drifted == 0, f"{drifted} of {ROUNDS} rounds miscounted: {counted} counted, {made} made"


async def test_a_pass_handled_again_counts_nothing_twice(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    await _subscribed(database, tmp_path)
    subscriber = RuleSubscriber(rule_settings(settings), database)
    for i in range(3):
        await datasets.create_did(database, ADMIN, DidIn(did=f"vo:again{i}"))
    await subscriber.run_once()
    assert await _counts(database) == (3, 3)
    for _ in range(2):  # killed after handling, before saving its place: the same events again
        await database["feed_consumers"].update_one({"_id": CONSUMER}, {"$set": {"position": 0}})
        await subscriber.run_once()
        assert await _counts(database) == (3, 3)


async def test_two_applications_of_the_same_events_at_once_count_each_rule_once(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    """As a subscriber that stalled past its lease and its successor would."""
    await _subscribed(database, tmp_path)
    miscounted = 0
    for round_ in range(CONCURRENT_ROUNDS):
        dids = [f"vo:both{round_}.{i}" for i in range(PER_ROUND)]
        for did in dids:
            await datasets.create_did(database, ADMIN, DidIn(did=did))
        events = [PER_ROUND * round_ + i + 1 for i in range(PER_ROUND)]

        async def apply(dids: list[str] = dids, events: list[int] = events) -> int:
            await asyncio.sleep(random.random() * 0.01)
            return await subscriptions.apply_to_new(database, dids, events)

        await asyncio.gather(apply(), apply())
        counted, made = await _counts(database)
        miscounted += counted != made
    assert miscounted == 0, f"{miscounted} of {CONCURRENT_ROUNDS} rounds miscounted"
