"""Backing off from a rule whose work keeps raising: after the k-th failed pass in a row, a daemon
takes the rule again no sooner than `rules.poll_s * 2**(k-1)` later (at most
`rules.backoff_max_s`), so a fault that passes (a stuck dependency, a transient bug) is outlived
by a few attempts spread over minutes rather than spent in seconds.

Each daemon keeps its own count and time on the rule (the evaluator's `evaluation_failures` and
`retry_at`, the cleaner's `cleaning_failures` and `cleaning_retry_at`, the repairer's
`repair_failures` and `repair_retry_at`), both reset or unset by a pass that succeeds
(`rules.daemon.RuleDaemon.give_back_later` counts and sets them); `ready` is the condition its
claim adds. The time is a field of its own, not `due`, so that nothing that brings `due` forward
(a wake, new content marking the rule dirty, a change of copies) shortens the wait.
"""

from __future__ import annotations

import datetime as dt

from kernel.db import Document
from kernel.settings import RuleSettings


def retry_at(settings: RuleSettings, failures: int, at: dt.datetime) -> dt.datetime:
    """When a rule that failed `failures` passes in a row (1 or more) may be taken again."""
    delay = min(settings.poll_s * 2.0 ** min(max(failures, 1) - 1, 60), settings.backoff_max_s)
    return at + dt.timedelta(seconds=delay)


def ready(field: str, at: dt.datetime) -> Document:
    """The rules whose `field` (a retry time) is unset or past at `at`: a residual condition to
    `$and` to a claim's query, whose indexed conditions stay at its top level (`rules.rule_claims.claim`)."""
    return {"$or": [{field: None}, {field: {"$lte": at}}]}
