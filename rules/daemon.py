"""The loop the rule daemons share: take rules one at a time under each rule's own lease
(`rules.rule_claims.claim`), work on each, give it back. A subclass says which rules (`query`), in
which order (`sort`), and what to do with one (`work_on`, which must release or remove it when
it succeeds). A rule whose work raised is given back here at once with its error (`give_back`),
not left held until its lease runs out: the other daemons (the cleaner, for one that expired)
take it at their next pass.

The lease is renewed every third of its length while the work runs (evaluating a rule on a large
dataset outlasts any fixed lease), so a second daemon takes a rule over only from a holder that
died or stalled; a holder that finds its lease taken over stops its work there, as if it had died.
A holder that stalled (paused past its lease) stops at its next lock write (`rules.locks`:
`kernel.lease.check_held`) instead of writing locks for a rule its successor may have removed.
Before its work, a holder settles the quota charges a killed predecessor left noted
(`rules.quota_notes`).
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import now
from kernel import lease
from kernel.daemon import Daemon, one_of_many
from kernel.db import Document
from kernel.settings import Settings
from rules import backoff, quota_notes, rule_claims

log = logging.getLogger("cairn.rules")

RULES_PER_CYCLE = 20


class RuleDaemon(Daemon):
    sort = "due"
    _claimed_at = 0.0  # time.monotonic() before the claim of the rule being worked on

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        super().__init__()
        self.db = db
        self.settings = settings.rules
        self.idle_sleep_s = settings.rules.idle_sleep_s

    @abstractmethod
    def query(self) -> Document | list[Document]:
        """The rules this daemon has work on now (several queries: tried in turn)."""

    @abstractmethod
    async def work_on(self, rule: Document) -> int:
        """Work on one claimed rule and give it back; returns how much was done (0: nothing)."""

    async def run_once(self) -> int:
        handled = 0
        failed: list[str] = []  # rules whose work raised in this pass: not taken again in it
        for _ in range(RULES_PER_CYCLE):
            if self.stopping:
                break
            rule = await self.claim(_besides(self.query(), failed))
            if rule is None:
                break
            handled += await self.isolated(rule, failed)
        return handled

    async def claim(self, query: Document | list[Document]) -> Document | None:
        """Take the next rule of `query` under its lease (`rule_claims.claim`), noting when."""
        self._claimed_at = time.monotonic()
        return await rule_claims.claim(self.db, self.worker, query, lease_s=self.settings.lease_s, sort=self.sort)

    async def isolated(self, rule: Document, failed: list[str]) -> int:
        """`holding(rule)`; its own error is kept on the rule and the pass goes on (a rule that
        raised stayed first in line, and every pass ended there, so no other rule moved on)."""
        done, why = await one_of_many(self.holding(rule), f"{self.name}: rule {rule['_id']}", log)
        if why is None:
            return done or 0
        failed.append(rule["_id"])
        await self.give_back(rule, f"{self.name} failed: {why}"[:2000])
        return 0

    async def give_back(self, rule: Document, error: str) -> None:
        """Release a rule whose work raised, keeping `error` on it (set even if the lease was lost),
        unless it was resumed since it was read (`rule_claims.unresumed`): then as the resume left it."""
        guard = rule_claims.unresumed(rule)
        if not await rule_claims.release(self.db, rule, self.worker, {"error": error}, guard=guard) \
                and not await rule_claims.release(self.db, rule, self.worker, {}):
            await rule_claims.set_fields(self.db, rule["_id"], {"error": error}, guard=guard)

    async def give_back_later(self, rule: Document, error: str, failures_field: str, retry_field: str) -> None:
        """`give_back`, counting the failure in `failures_field` and keeping the rule from this
        daemon until `retry_field` (`rules.backoff`), which its query must hold it to."""
        failures = await rule_claims.count_failure(self.db, rule, self.worker, failures_field)
        if failures is None:  # its lease was lost (the new holder counts its own pass), or it was resumed
            await RuleDaemon.give_back(self, rule, error)
            return
        retry = backoff.retry_at(self.settings, failures, now())
        log.warning("%s: rule %s failed %d time(s) in a row, trying again at %s: %s", self.name, rule["_id"],
                    failures, retry.isoformat(), error)
        if not await rule_claims.release(self.db, rule, self.worker, {"error": error, retry_field: retry},
                                         guard={**rule_claims.unresumed(rule), failures_field: failures}):
            await RuleDaemon.give_back(self, rule, error)

    async def holding(self, rule: Document) -> int:
        """`work_on(rule)`, renewing the rule's lease while it runs (`kernel.lease.while_held`)."""
        held, done = await lease.while_held(
            self._settled_then_work_on(rule),
            lambda: rule_claims.renew(self.db, rule["_id"], self.worker, lease_s=self.settings.lease_s),
            every_s=self.settings.lease_s / 3, lease_s=self.settings.lease_s, since=self._claimed_at)
        if not held:
            log.warning("%s: lost the lease of rule %s; stopping its work", self.name, rule["_id"])
        return done or 0

    async def _settled_then_work_on(self, rule: Document) -> int:
        """`work_on(rule)` once the quota charges a killed holder of the rule left noted are
        settled (`rules.quota_notes`)."""
        await quota_notes.settle_left(self.db, rule)
        return await self.work_on(rule)


def _besides(query: Document | list[Document], failed: list[str]) -> Document | list[Document]:
    """The query (each of several) without the rules in `failed`."""
    if not failed:
        return query
    if isinstance(query, dict):
        return {**query, "_id": {"$nin": failed}}
    return [{**q, "_id": {"$nin": failed}} for q in query]
