"""A rule daemon killed between a quota charge and its locks' write (or between a give-back and
the delete) leaves the account's usage exact all the same: the rule's next holder settles the
note the call left on the usage records (`rules.quota_notes`), and a call that only stalled
there and resumes after its successor settled for it counts nothing more. Calls are cut short by
a real outage (a TCP gate in front of the database closing once a given command was answered)
or frozen in a thread of their own; the next holder is a real evaluator's pass. Each end state
is checked against the locks and by the rebuild's dry run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from rules import locks as rule_locks
from rules import quota_notes, quota_rebuild, quotas, store
from rules.evaluator import RuleEvaluator
from tests.fixtures.freezing import stalled_call
from tests.fixtures.quota_locks import ALL, HALF, charged, held_by_locks, new_locks, notes_left, quota_rule
from tests.fixtures.rules import rule_settings
from tests.fixtures.tcp_gate import TcpGate, cut_short


@pytest.fixture
async def rule(database: AsyncDatabase[Document], tmp_path: Path) -> Document:
    return await quota_rule(database, tmp_path)


async def _exact(db: AsyncDatabase[Document], rule: Document) -> None:
    """No note left, the usage what the locks hold, and the rule's counters what its locks are."""
    assert await notes_left(db) == 0
    assert await charged(db) == await held_by_locks(db)
    assert (await quota_rebuild.rebuild(db, fix=False))["drifted"] == 0
    counted = rule_locks.counters_of(await store.get_rule(db, rule["_id"]))
    assert counted == await rule_locks.recount(db, rule["_id"])


async def _next_holder(db: AsyncDatabase[Document], settings: Settings) -> None:
    """An evaluator's pass: it takes the rule (dirty since it was made) and settles its notes first."""
    await RuleEvaluator(rule_settings(settings), db).run(max_cycles=1)


async def _half_then_cut(db: AsyncDatabase[Document], settings: Settings, rule: Document, gate: TcpGate,
                         command: str, collection: str, again: slice) -> None:
    """The first ten files' locks inserted, then an insert of `again` of them cut short once the
    database answered `command` on `collection`."""
    locks = new_locks(rule)
    await rule_locks.insert_locks(db, rule, locks[:20])
    await cut_short(gate, settings.database, command, collection,
                    lambda gated: rule_locks.insert_locks(gated, rule, [dict(lock) for lock in locks[again]]))


async def test_an_insert_killed_after_its_charge_is_given_back_by_the_rules_next_holder(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate,
) -> None:
    await _half_then_cut(database, settings, rule, db_gate, "update", quotas.ACCOUNT_USAGE, slice(20, None))
    assert await held_by_locks(database) == HALF
    assert await charged(database) == {**HALF, "SRC": ALL["SRC"]}  # SRC charged for ten locks not written
    await _next_holder(database, settings)
    assert await held_by_locks(database) == ALL  # the evaluation placed the other ten files
    await _exact(database, rule)


async def test_an_insert_killed_after_writing_its_locks_keeps_their_charge_and_gives_back_the_duplicates(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate,
) -> None:
    await _half_then_cut(database, settings, rule, db_gate, "insert", rule_locks.LOCKS, slice(None))
    assert await held_by_locks(database) == ALL
    assert await charged(database) == {se: (30, 3000) for se in ALL}  # the first ten files' twice
    await _next_holder(database, settings)
    await _exact(database, rule)
    assert await charged(database) == ALL


@pytest.mark.parametrize("cut_after", ["update", "delete"])
async def test_a_release_killed_after_its_give_back_is_finished_by_the_rules_next_holder(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate, cut_after: str,
) -> None:
    """Cut after SRC's give-back (T1-A's not sent, nothing deleted), or after the delete (the
    rule's counters and the notes' removal not sent)."""
    await rule_locks.insert_locks(database, rule, new_locks(rule))
    collection = quotas.ACCOUNT_USAGE if cut_after == "update" else rule_locks.LOCKS
    await cut_short(db_gate, settings.database, cut_after, collection,
                    lambda db: rule_locks.remove_locks(db, rule, new_locks(rule)[:20]))
    assert await charged(database) == (HALF if cut_after == "delete" else {**ALL, "SRC": HALF["SRC"]})
    assert await notes_left(database) == (2 if cut_after == "delete" else 1)
    await _next_holder(database, settings)
    await _exact(database, rule)


async def test_a_release_stalled_before_its_delete_counts_nothing_more_after_its_successor_settled(
    database: AsyncDatabase[Document], settings: Settings, rule: Document,
) -> None:
    await rule_locks.insert_locks(database, rule, new_locks(rule))
    gone = new_locks(rule)[:20]
    async with stalled_call(settings, lambda db: rule_locks.remove_locks(db, rule, gone),
                            rule_locks._delete_marked.__code__, "release") as stalled:
        assert await charged(database) == HALF  # given back, its locks not deleted yet
        assert await quota_notes.settle_left(database, rule) == 2  # the successor, on taking the rule
        assert await held_by_locks(database) == HALF
    assert stalled["result"] == 0  # its delete found them gone: it counted nothing
    await _exact(database, rule)
    assert await charged(database) == HALF


async def test_the_notes_of_a_rule_no_daemon_takes_again_are_settled_by_the_evaluators_sweep(
    database: AsyncDatabase[Document], settings: Settings, rule: Document, db_gate: TcpGate,
) -> None:
    """A rule suspended after its failed passes (the last one cut short after a charge): no daemon
    takes it until it is resumed, and the evaluator's sweep settles its note meanwhile."""
    await _half_then_cut(database, settings, rule, db_gate, "update", quotas.ACCOUNT_USAGE, slice(20, None))
    await database[store.RULES].update_one({"_id": rule["_id"]}, {"$set": {"state": "suspended"}})
    await asyncio.sleep(0.6)  # older than the lease below
    await RuleEvaluator(rule_settings(settings, lease_s=0.5), database).run(max_cycles=1)
    assert (await store.get_rule(database, rule["_id"]))["state"] == "suspended"  # not evaluated
    await _exact(database, rule)
    assert await charged(database) == HALF
