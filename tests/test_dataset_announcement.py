"""Every dataset is announced on the change feed (`did_created`) exactly once (eighth fixes): a
creation cut short between its insert and its event (a server killed, a database error) left a
dataset no subscription ever saw. A dataset is now inserted marked unannounced, its event
appended, its mark cleared; `datasets.announce_late` (the subscriber's pass) announces those
whose mark lapsed, each by one sweeper. Reproduced by cutting the database right after the
insert, and by cancelling a few hundred creations at random moments (~50 of ~180 were never
announced before the fix)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, datasets
from catalogue.datasets import DidIn
from kernel.db import Document
from kernel.settings import Settings
from rules import subscriptions
from rules.subscriber import RuleSubscriber
from rules.subscriptions import RuleTemplate, SubscriptionIn, add_subscription, rule_id_for
from tests.fixtures.catalogue import ADMIN, CommandCounter
from tests.fixtures.rules import rule_settings, tiered_ses
from tests.fixtures.tcp_gate import TcpGate, cut_short

ROUNDS = 200
SWEEP_ROUNDS = 100


async def _announced(db: AsyncDatabase[Document]) -> Counter[str]:
    """How many `did_created` events each DID has on the feed."""
    return Counter(e["did"] for e in await change_feed.read(db, 0, 1_000_000) if e["kind"] == "did_created")


async def _lapse(db: AsyncDatabase[Document]) -> None:
    """As if the grace period had passed since every dataset left unannounced was inserted."""
    past = datasets.now() - 2 * datasets.ANNOUNCE_GRACE
    await db[datasets.DATASETS].update_many({datasets.UNANNOUNCED: {"$exists": True}},
                                            {"$set": {datasets.UNANNOUNCED_SINCE: past}})


async def _subscribed(db: AsyncDatabase[Document], tmp_path: Path) -> None:
    await tiered_ses(db, tmp_path)
    await add_subscription(db, ADMIN, SubscriptionIn(name="all", rule=RuleTemplate(copies=1, expression="tier=1")))


async def test_a_dataset_whose_creation_was_cut_after_its_insert_gets_its_subscriptions_rule(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, db_gate: TcpGate,
) -> None:
    await _subscribed(database, tmp_path)
    await cut_short(db_gate, settings.database, "insert", datasets.DATASETS,
                    lambda db: datasets.create_did(db, ADMIN, DidIn(did="vo:cut")))
    subscriber = RuleSubscriber(rule_settings(settings), database)
    await subscriber.run_once()
    assert await database["rules"].count_documents({}) == 0  # within its grace: the creator may be alive
    await _lapse(database)
    later = RuleSubscriber(rule_settings(settings), database)  # its pass after the grace (or its successor's)
    await later.run_once()
    assert await database["rules"].find_one({"_id": rule_id_for("all", "vo:cut")}) is not None
    stored = await database["subscriptions"].find_one({"_id": "all"})
    assert stored is not None and stored["rules_created"] == 1
    assert (await _announced(database))["vo:cut"] == 1
    assert not {"unannounced", "unannounced_since"} & set(datasets.did_view(await datasets.get_did(database, "vo:cut")))


async def test_a_dataset_announced_again_after_a_cut_before_its_mark_went_gets_one_rule_counted_once(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path, db_gate: TcpGate,
) -> None:
    """The window left: a server killed after the event and before the mark's clear."""
    await _subscribed(database, tmp_path)
    await cut_short(db_gate, settings.database, "insert", change_feed.EVENTS,
                    lambda db: datasets.create_did(db, ADMIN, DidIn(did="vo:twice")))
    await RuleSubscriber(rule_settings(settings), database).run_once()
    await _lapse(database)
    await RuleSubscriber(rule_settings(settings), database).run_once()
    assert (await _announced(database))["vo:twice"] == 2
    stored = await database["subscriptions"].find_one({"_id": "all"})
    assert stored is not None and stored["rules_created"] == 1
    assert await database["rules"].count_documents({}) == 1


async def test_creations_cancelled_at_random_leave_no_dataset_unannounced(
    database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    await _subscribed(database, tmp_path)
    for i in range(ROUNDS):
        task = asyncio.create_task(datasets.create_did(database, ADMIN, DidIn(did=f"vo:r{i}")))
        await asyncio.sleep(random.random() * 0.006)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.sleep(1)  # the announcements of the creations cancelled after their insert end
    await _lapse(database)
    await asyncio.gather(datasets.announce_late(database), datasets.announce_late(database))
    made = await database[datasets.DATASETS].count_documents({})
    announced = await _announced(database)
    lost = made - len(announced)
    twice = sum(n > 1 for n in announced.values())
    assert (lost, twice) == (0, 0), f"of {made} datasets, {lost} never announced, {twice} more than once"
    # The subscriber's handling of those events (the feed's holes left by the cancelled appends
    # would hold a reader back for SETTLE_S).
    created = [e for e in await change_feed.read(database, 0, 1_000_000) if e["kind"] == "did_created"]
    await subscriptions.apply_to_new(database, [e["did"] for e in created], [e["_id"] for e in created])
    stored = await database["subscriptions"].find_one({"_id": "all"})
    assert stored is not None
    assert (stored["rules_created"], await database["rules"].count_documents({})) == (made, made)


async def test_two_sweepers_announce_each_dataset_left_unannounced_once(
    catalogue_db: AsyncDatabase[Document], settings: Settings, db_gate: TcpGate,
) -> None:
    database = catalogue_db  # with its indexes: the sweep's is sparse, on a nested field
    for i in range(SWEEP_ROUNDS):
        await cut_short(db_gate, settings.database, "insert", datasets.DATASETS,
                        lambda db, i=i: datasets.create_did(db, ADMIN, DidIn(did=f"vo:s{i}")))
        await _lapse(database)
        await asyncio.gather(datasets.announce_late(database), datasets.announce_late(database))
    announced = await _announced(database)
    assert len(announced) == SWEEP_ROUNDS
    twice = [did for did, n in announced.items() if n != 1]
    assert not twice, f"{len(twice)} of {SWEEP_ROUNDS} datasets announced more than once"


async def test_creating_a_dataset_costs_one_round_trip_more_than_its_insert_and_event(
    mongodb_uri: str, settings: Settings, database: AsyncDatabase[Document],
) -> None:
    counter = CommandCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[counter], tz_aware=True)
    try:
        await datasets.create_did(client[settings.database], ADMIN, DidIn(did="vo:counted"))
    finally:
        await client.close()
    assert counter.commands == ["insert", "findAndModify", "insert", "update"]
    assert (await _announced(database))["vo:counted"] == 1
