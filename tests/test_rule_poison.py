"""One rule the evaluator cannot evaluate does not stop the others: its error is kept on it and
the pass goes on (a rule whose expression was stored before expressions had a depth bound raised
out of every pass, first of all since it stays dirty, so no replicating rule moved on again),
and it is not called ok while it was never evaluated (it was: no locks counted, so "ok").
After `rules.suspend_after_failures` failed passes in a row it is suspended, and no pass is spent
on it until it is resumed (it was tried again every pass, forever); a pass that failed gives the
rule back at once, so a deleted one is the cleaner's without waiting out the lease (it was held,
when a record its evaluation could not read failed the evaluator's release too).
A failed pass is not tried again before a delay that doubles with each failure (a dirty rule was
taken again at the next pass, so a fault that might pass suspended it within a second), and a
failed cleaning likewise (it was retried every pass); a resumed rule no longer shows the error
it was suspended with (it did until it settled)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.bounds import MAX_EXPRESSION_DEPTH
from kernel.db import Document
from kernel.errors import NotFound
from kernel.principal import Principal
from kernel.settings import Settings
from rules import rule_edits, store, triggers
from rules.cleaner import RuleCleaner
from rules.evaluator import RuleEvaluator
from rules.repairer import RuleRepairer
from rules.rule_models import ERROR_WITHHELD, RuleIn, RuleUpdate, rule_view
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.rules import dataset_on_src, rule_settings, run_until_ok, tiered_ses

DEEP = "(" * (MAX_EXPRESSION_DEPTH + 1) + "tier=1" + ")" * (MAX_EXPRESSION_DEPTH + 1)
CAROL = Principal(sub="carol", vo="cta", groups=("cta",), scopes=frozenset({"catalogue.read"}))


async def unreadable_rule(db: AsyncDatabase[Document], did: str, stored: Document | None = None) -> Document:
    """A rule whose stored record its evaluation cannot read (by default an expression stored
    before expressions had a depth bound)."""
    rule = await store.create_rule(db, ADMIN, RuleIn(did=did, copies=1, expression="tier=1"))
    await db["rules"].update_one({"_id": rule["_id"]}, {"$set": stored or {"expression": DEEP}})
    return rule


async def backoff_over(db: AsyncDatabase[Document], rule_id: str, field: str = "retry_at") -> None:
    """Move a failed rule's retry time (`rules.backoff`) into the past, as if its delay had passed."""
    await db["rules"].update_one({"_id": rule_id}, {"$set": {field: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)}})


async def bad_rule(db: AsyncDatabase[Document], tmp_path: Path, stored: Document | None = None) -> Document:
    """The tiered SEs, a dataset `vo:bad` of one file, and an `unreadable_rule` on it."""
    await tiered_ses(db, tmp_path)
    await dataset_on_src(db, "vo:bad", ["/vo/bad/f"])
    return await unreadable_rule(db, "vo:bad", stored)


async def cleaned_at_once(db: AsyncDatabase[Document], fast: Settings, rule_id: str) -> None:
    """Delete a rule: the cleaner's next pass removes it."""
    await rule_edits.delete_rule(db, ADMIN, rule_id)
    assert await RuleCleaner(fast, db).run_once() == 1
    with pytest.raises(NotFound):
        await store.get_rule(db, rule_id)


async def test_a_rule_that_cannot_be_evaluated_does_not_stop_the_others(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    await dataset_on_src(database, "vo:good", ["/vo/good/f"])
    good = await store.create_rule(database, ADMIN, RuleIn(did="vo:good", copies=1, expression="tier=1"))
    await run_until_ok(database, rule_settings(settings), good["_id"], timeout_s=30)
    kept = await store.get_rule(database, bad["_id"])
    assert "parentheses nest deeper" in kept["error"] and kept["dirty"], kept  # looked at again, first
    assert kept["state"] != "ok", kept


async def test_a_rule_whose_evaluation_keeps_failing_is_suspended_and_left_alone(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    evaluator = RuleEvaluator(rule_settings(settings, suspend_after_failures=3), database)
    for failures in (1, 2, 3):
        assert (await store.get_rule(database, bad["_id"]))["state"] == "replicating"
        await backoff_over(database, bad["_id"])
        await evaluator.run_once()
        kept = await store.get_rule(database, bad["_id"])
        assert (kept["evaluation_failures"], kept["lease_owner"]) == (failures, None), kept
    assert kept["state"] == "suspended", kept
    assert "suspended after 3 failed evaluations" in kept["error"] and "parentheses nest deeper" in kept["error"]
    await evaluator.run_once()
    assert await store.get_rule(database, bad["_id"]) == kept  # not taken again
    assert rule_view(kept, ADMIN)["error"] == kept["error"]
    assert rule_view(kept, CAROL)["error"] == ERROR_WITHHELD  # a dataset rule's reader who is not its account


async def test_resuming_a_suspended_rule_resets_its_failures(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    fast = rule_settings(settings, suspend_after_failures=2)
    evaluator = RuleEvaluator(fast, database)
    for _ in range(2):
        await backoff_over(database, bad["_id"])
        await evaluator.run_once()
    assert (await store.get_rule(database, bad["_id"]))["state"] == "suspended"
    await database["rules"].update_one({"_id": bad["_id"]}, {"$set": {"expression": "tier=1"}})  # mended
    resumed = await rule_edits.update_rule(database, ADMIN, bad["_id"], RuleUpdate(state="replicating"))
    assert (resumed["state"], resumed["evaluation_failures"], resumed["dirty"]) == ("replicating", 0, True)
    await run_until_ok(database, fast, bad["_id"], timeout_s=30)


async def test_a_deleted_rule_whose_evaluation_failed_is_cleaned_without_waiting_for_its_lease(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    fast = rule_settings(settings, lease_s=120.0)
    bad = await bad_rule(database, tmp_path, {"locks_stuck": "many"})  # a counter that no longer reads
    await RuleEvaluator(fast, database).run_once()
    assert (await store.get_rule(database, bad["_id"]))["evaluation_failures"] == 1
    await cleaned_at_once(database, fast, bad["_id"])


async def test_a_suspended_rule_that_expires_is_cleaned(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    fast = rule_settings(settings, suspend_after_failures=1)
    bad = await bad_rule(database, tmp_path)
    await RuleEvaluator(fast, database).run_once()
    assert (await store.get_rule(database, bad["_id"]))["state"] == "suspended"
    await cleaned_at_once(database, fast, bad["_id"])


async def test_a_failed_evaluation_is_not_tried_again_before_its_backoff_even_when_new_content_comes(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    evaluator = RuleEvaluator(rule_settings(settings, poll_s=60.0), database)
    before = dt.datetime.now(dt.UTC)
    await evaluator.run_once()
    failed = await store.get_rule(database, bad["_id"])
    assert failed["evaluation_failures"] == 1 and failed["retry_at"] >= before + dt.timedelta(seconds=59), failed
    await evaluator.run_once()
    assert await store.get_rule(database, bad["_id"]) == failed  # dirty, but not taken
    await triggers.content_changed(database, ["vo:bad"])  # new content marks it dirty again
    changed = await store.get_rule(database, bad["_id"])
    await evaluator.run_once()
    assert await store.get_rule(database, bad["_id"]) == changed
    await backoff_over(database, bad["_id"])
    await evaluator.run_once()
    again = await store.get_rule(database, bad["_id"])
    assert again["evaluation_failures"] == 2 and again["retry_at"] >= before + dt.timedelta(seconds=119), again


async def test_failed_evaluations_until_the_suspension_span_at_least_their_backoffs(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    evaluator = RuleEvaluator(rule_settings(settings, poll_s=0.1, suspend_after_failures=5), database)
    began = time.monotonic()
    while (await store.get_rule(database, bad["_id"]))["state"] != "suspended":
        assert time.monotonic() - began < 20
        await evaluator.run_once()
        await asyncio.sleep(0.02)
    assert time.monotonic() - began >= 0.1 * (1 + 2 + 4 + 8)


async def test_the_backoff_is_capped(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    evaluator = RuleEvaluator(rule_settings(settings, poll_s=60.0, backoff_max_s=90.0), database)
    for _ in range(3):  # the third waits 90 s, not 240
        await backoff_over(database, bad["_id"])
        before = dt.datetime.now(dt.UTC)
        await evaluator.run_once()
    after = dt.datetime.now(dt.UTC)
    kept = await store.get_rule(database, bad["_id"])
    assert kept["evaluation_failures"] == 3, kept
    assert before + dt.timedelta(seconds=89) <= kept["retry_at"] <= after + dt.timedelta(seconds=90), kept


async def test_a_failed_cleaning_backs_off_and_the_rule_goes_once_it_can(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path, {"did_type": "file"})
    await database["rules"].update_one({"_id": bad["_id"]}, {"$unset": {"did": ""}})  # a record that no longer reads
    await rule_edits.delete_rule(database, ADMIN, bad["_id"])
    cleaner = RuleCleaner(rule_settings(settings, poll_s=60.0), database)
    before = dt.datetime.now(dt.UTC)
    assert await cleaner.run_once() == 0
    failed = await store.get_rule(database, bad["_id"])
    assert failed["cleaning_failures"] == 1 and "KeyError" in failed["error"], failed
    assert failed["cleaning_retry_at"] >= before + dt.timedelta(seconds=59), failed
    assert await cleaner.run_once() == 0
    assert await store.get_rule(database, bad["_id"]) == failed  # not taken
    await backoff_over(database, bad["_id"], "cleaning_retry_at")
    await cleaner.run_once()
    again = await store.get_rule(database, bad["_id"])
    assert again["cleaning_failures"] == 2 and again["cleaning_retry_at"] >= before + dt.timedelta(seconds=119)
    await database["rules"].update_one({"_id": bad["_id"]}, {"$set": {"did": "vo:bad", "did_type": "dataset"}})
    await backoff_over(database, bad["_id"], "cleaning_retry_at")
    assert await cleaner.run_once() == 1
    with pytest.raises(NotFound):
        await store.get_rule(database, bad["_id"])


async def test_a_failed_repair_backs_off_and_a_good_one_resets_it(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    stuck = {"expression": DEEP, "state": "stuck", "stuck_since": dt.datetime.now(dt.UTC)}
    bad = await bad_rule(database, tmp_path, stuck)
    repairer = RuleRepairer(rule_settings(settings, poll_s=60.0), database)
    before = dt.datetime.now(dt.UTC)
    await repairer.run_once()
    failed = await store.get_rule(database, bad["_id"])
    assert failed["repair_failures"] == 1 and failed["lease_owner"] is None, failed
    assert failed["repair_retry_at"] >= before + dt.timedelta(seconds=59) and failed["state"] == "stuck", failed
    await repairer.run_once()
    assert await store.get_rule(database, bad["_id"]) == failed  # not taken before its time
    await backoff_over(database, bad["_id"], "repair_retry_at")
    await repairer.run_once()
    again = await store.get_rule(database, bad["_id"])
    assert again["repair_failures"] == 2 and again["repair_retry_at"] >= before + dt.timedelta(seconds=119)
    await database["rules"].update_one({"_id": bad["_id"]}, {"$set": {"expression": "tier=1"}})  # mended
    await backoff_over(database, bad["_id"], "repair_retry_at")
    await repairer.run_once()
    mended = await store.get_rule(database, bad["_id"])
    assert (mended["repair_failures"], mended["repair_retry_at"]) == (0, None), mended


async def test_a_resumed_rule_shows_no_error_but_keeps_the_last_one(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    bad = await bad_rule(database, tmp_path)
    await RuleEvaluator(rule_settings(settings, suspend_after_failures=1), database).run_once()
    suspended = await store.get_rule(database, bad["_id"])
    assert suspended["state"] == "suspended", suspended
    resumed = await rule_edits.update_rule(database, ADMIN, bad["_id"], RuleUpdate(state="replicating"))
    assert (resumed["error"], resumed["last_error"], resumed["retry_at"]) == (None, suspended["error"], None)
    assert rule_view(resumed, ADMIN)["last_error"] == suspended["error"]
    assert rule_view(resumed, CAROL)["last_error"] == ERROR_WITHHELD
