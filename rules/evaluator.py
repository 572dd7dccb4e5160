"""`cairn daemon rule-evaluator`: turns rules into locks and transfers, and follows them.

Each cycle it takes rules one at a time under the rule's lease: a `dirty` rule (new, copies
changed, its DID's content changed, a locked replica removed) is evaluated
(`rules.evaluation.evaluate`, which also submits the new locks' transfers); a rule with
replicating locks from before has them moved on by their replicas and requests
(`rules.progress`), then its state is settled from its counters. A rule is looked at
again after `rules.poll_s`, or after as long as its pass took if that is longer, or sooner when
the change feed says replicas it waits for became available (`rules.wake`). Suspended
rules are left alone; expired ones are the cleaner's. Any number of evaluators can run: the
lease keeps each rule to one. A rule whose evaluation raised (not a database outage: a stored
record that no longer reads, a fault that may pass) is taken again only after a delay that doubles
with each failure in a row, dirty or not (`rules.backoff`), and suspended after
`rules.suspend_after_failures` of them (`RuleEvaluator.give_back`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.directories import now
from kernel import claims
from kernel.db import Document, database_errors
from rules import backoff, feed, locks, quota_notes, rule_claims, store
from rules.daemon import RuleDaemon
from rules.evaluation import evaluate, settle
from rules.progress import progress
from rules.wake import release_unless_woken

log = logging.getLogger("cairn.rules")
# How often the evaluator trims the change feed of events every consumer has passed, and settles
# the quota notes of rules no daemon holds (`rules.quota_notes.settle_unheld`).
TRIM_EVERY_S = 60.0

def evaluator_query(at: dt.datetime) -> list[Document]:
    """Rules with work for the evaluator, in the order it takes them: dirty ones (not suspended),
    then replicating and then stuck ones due for a look; unexpired all (or locked:
    `store.not_removed`), and none backing off after a failed pass (`retry_at`). Each its own
    query, so that an index holds its condition (`rules_dirty`, `rules_by_state_due`: top-level
    equalities and bounds); the `$or`s are in a `$and`, which the embedded database checks on the
    rules the index gave."""
    live = store.not_removed(at)
    rest = {"$and": [live, backoff.ready("retry_at", at)]}
    return [{"dirty": True, "state": {"$ne": "suspended"}, **rest},
            *({"state": state, "due": {"$lte": at}, **rest} for state in ("replicating", "stuck"))]


async def first_stuck_error(db: AsyncDatabase[Document], rule_id: str) -> str | None:
    """Why one of the rule's stuck locks is stuck (the reason a person sees on the rule)."""
    with database_errors():
        # Index: locks_by_rule_state.
        lock = await db[locks.LOCKS].find_one({"rule": rule_id, "state": "stuck"}, {"error": 1, "lfn": 1})
    return f"{lock['lfn']}: {lock.get('error')}" if lock else None


class RuleEvaluator(RuleDaemon):
    name = "rule-evaluator"
    _trimmed_at = -TRIM_EVERY_S

    async def run_once(self) -> int:
        """Follow the change feed (content changes make rules dirty), then work on rules."""
        followed = await feed.follow(self.db, self.worker, lease_s=self.settings.lease_s)
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            self._trimmed_at = time.monotonic()
            await change_feed.trim(self.db, keep_s=self.settings.feed_retention_s)
            await quota_notes.settle_unheld(self.db, self.worker, lease_s=self.settings.lease_s)
        return followed + await super().run_once()

    def query(self) -> list[Document]:
        return evaluator_query(now())

    async def work_on(self, rule: Document) -> int:
        """Evaluate (if dirty) and move on one claimed rule, then give it back settled (when this
        raised, `give_back` does)."""
        changed = 0
        began = time.monotonic()
        waiting = True
        if rule.get("dirty"):
            stats = await evaluate(self.db, rule, self.settings)
            log.info("rule %s on %s: %s", rule["_id"], rule["did"], stats)
            changed += stats["new"] + stats["released"] + 1
            await rule_claims.clear_dirty(self.db, rule["_id"], int(rule.get("generation", 0)))
            # The new locks' transfers were submitted by the evaluation itself.
            waiting = stats["waiting"] > 0
        if waiting:
            changed += await progress(self.db, rule, self.settings)
        await self.give_back_settled(rule, began)
        return changed

    async def give_back_settled(self, rule: Document, began: float) -> None:
        """Give back a rule whose pass succeeded, in the state its counters say, its failures reset."""
        current = await store.get_rule(self.db, rule["_id"])
        held = current.get(claims.OWNER) == self.worker
        stuck_error = await first_stuck_error(self.db, rule["_id"]) if int(current.get("locks_stuck", 0)) else None
        if stuck_error is None and int(current.get("locks_stuck", 0)) and held:
            # Counted stuck, none found: a daemon cut short between a lock's removal and its count
            # (a repair's move). Settled from that, the rule stayed stuck, never ok, and was
            # suspended by the repairer, which found nothing to move.
            current.update({f"locks_{s}": n for s, n in (await locks.recount(self.db, rule["_id"])).items()})
        fields = settle(current)
        if fields.get("state") == "ok" and current["state"] != "ok" and current.get("dirty"):
            fields = {}  # changed meanwhile: evaluated again before it is called ok
        if fields.get("state") == "ok" and current["state"] != "ok" and held:
            # Counted, not assumed, before a rule is called ok (and no longer looked at).
            current.update({f"locks_{s}": n for s, n in (await locks.recount(self.db, rule["_id"])).items()})
            fields = settle(current)
        if fields.get("state") == "stuck" and int(current.get("locks_stuck", 0)):
            fields["error"] = stuck_error or await first_stuck_error(self.db, rule["_id"]) or current.get("error")
            if current["state"] != "stuck":
                log.warning("rule %s is stuck: %s", rule["_id"], fields["error"])
        # A rule whose pass took long is looked at less often, so one large rule does not
        # keep the evaluators from the others; a wake (`rules.wake`) brings it forward.
        took = time.monotonic() - began
        due = now() + dt.timedelta(seconds=max(self.settings.poll_s, took))
        passed = {"due": due, "evaluation_failures": 0, "retry_at": None}
        # The state only while the rule is as read: a resume (or a change of copies or content)
        # since bumped `generation` and made it dirty; its state is then settled at the next pass,
        # not put back (a resumed rule got its old `stuck_since` again, and was suspended at once).
        if not await release_unless_woken(self.db, rule, self.worker, {**fields, **passed}, took,
                                          guard={"generation": current.get("generation")}):
            await release_unless_woken(self.db, rule, self.worker, passed, took)

    async def give_back(self, rule: Document, error: str) -> None:
        """A pass that raised is counted on the rule (`evaluation_failures`): at
        `rules.suspend_after_failures` in a row the rule is suspended, its error kept, and no
        pass is spent on it until it is resumed; before that it is not taken again before its
        `retry_at` (`rules.backoff`: dirty or not), and left as it was (not settled: its counters
        may be half changed)."""
        failures = await rule_claims.count_failure(self.db, rule, self.worker)
        if failures is None:  # its lease was lost (the new holder counts its own pass), or it was resumed
            await super().give_back(rule, error)
            return
        retry = backoff.retry_at(self.settings, failures, now())
        fields: dict[str, object] = {"error": error, "due": retry, "retry_at": retry}
        if failures >= self.settings.suspend_after_failures:
            fields.update(state="suspended", error=f"suspended after {failures} failed evaluations in a row "
                          f"(resume it to try again); the last: {error}"[:2000])
            log.warning("rule %s: %s", rule["_id"], fields["error"])
        # Guarded by the count and the resumes: a resume meanwhile is not undone by a suspension.
        if not await rule_claims.release(self.db, rule, self.worker, fields,
                                         guard={**rule_claims.unresumed(rule), "evaluation_failures": failures}):
            await super().give_back(rule, error)
