"""Waking replicating rules when the change feed says replicas they wait for became available, so
that a rule turns ok promptly without a tight poll (`rules.poll_s` stays the fallback).

`replicas_available` (called by `rules.feed` with the feed's `replica_status: available` events)
finds the rules holding a replicating lock on those replicas: the rules replicating or stuck
(a short list; index rules_by_state_due), each asked only about the pairs on an SE of its
expression, by lock `_id` (`<rule>:<lfn>:<se>`, the `_id` index, in slices), a rule's reading
stopping at its first hit. `wake` then brings each rule's `due` forward to now, but not before
its `next_wake` (its last pass's end plus that pass's length, so that a large rule woken by a
stream of events still leaves the evaluators time for the others), and bumps its `wakes`: the
evaluator gives a rule back guarded by the `wakes` it claimed (`woken_during`), so a wake that
arrives during a pass, whose `due` the release would overwrite, is not lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import now
from kernel.db import Document, bulk_write_chunked, database_errors, increment, read_by_ids
from rules import rule_admission, rule_claims
from rules.locks import LOCKS, lock_id
from rules.se_expression import ExpressionError, resolve
from rules.triggers import RULES

WAITING_STATES = ("replicating", "stuck")
# The shortest time between a rule's passes that a wake brings forward.
MIN_GAP_S = 1.0


async def _waiting_rules(db: AsyncDatabase[Document]) -> list[Document]:
    with database_errors():
        # Index: rules_by_state_due.
        return await db[RULES].find({"state": {"$in": list(WAITING_STATES)}, "locks_replicating": {"$gt": 0}},
                                    {"expression": 1, "next_wake": 1}).to_list()


async def _has_replicating_lock(db: AsyncDatabase[Document], ids: list[str]) -> bool:
    async for _ in read_by_ids(db[LOCKS], ids, {"_id": 1}, flt={"state": "replicating"}):
        return True
    return False


async def rules_waiting_on(db: AsyncDatabase[Document], pairs: Iterable[tuple[str, str]]) -> list[Document]:
    """The rules with a replicating lock on any replica `(lfn, se)` (see the module docstring)."""
    wanted = sorted(set(pairs))
    rules = await _waiting_rules(db) if wanted else []
    if not rules:
        return []
    ses = await rule_admission.all_ses(db)
    found = []
    for rule in rules:
        try:
            names = resolve(rule["expression"], ses)
        except ExpressionError:
            continue
        if await _has_replicating_lock(db, [lock_id(rule["_id"], lfn, se) for lfn, se in wanted if se in names]):
            found.append(rule)
    return found


async def wake(db: AsyncDatabase[Document], rules: Iterable[Document]) -> None:
    """Bring the rules' next look forward to now (not before their `next_wake`) and count the
    wake (`wakes`), in one bulk write."""
    at = now()
    updates = []
    for rule in rules:
        target = max(at, rule.get("next_wake") or at)
        waiting = {"_id": rule["_id"], "state": {"$in": list(WAITING_STATES)}}
        updates += [UpdateOne(waiting, increment({"wakes": 1})),
                    UpdateOne({**waiting, "due": {"$gt": target}}, {"$set": {"due": target}})]
    if updates:
        await bulk_write_chunked(db[RULES], updates)


async def replicas_available(db: AsyncDatabase[Document], pairs: Iterable[tuple[str, str]]) -> int:
    """Wake the rules waiting on these replicas, now available; returns how many."""
    rules = await rules_waiting_on(db, pairs)
    await wake(db, rules)
    return len(rules)


def next_wake(ended: dt.datetime, took_s: float) -> dt.datetime:
    """The earliest a wake may bring a rule's next pass to, after a pass of `took_s` ended at `ended`."""
    return ended + dt.timedelta(seconds=max(MIN_GAP_S, took_s))


async def release_unless_woken(db: AsyncDatabase[Document], rule: Document, worker: str, fields: Document,
                               took_s: float, *, guard: Document | None = None) -> bool:
    """Give a claimed rule back with `fields` (its `due` the poll's) and `next_wake`; if a wake came
    during the pass (its `wakes` moved since the claim), due at `next_wake` instead. Only while the
    rule matches `guard` too: False (nothing written) when it does not, or the lease was lost."""
    ended = now()
    earliest = next_wake(ended, took_s)
    if await rule_claims.release(db, rule, worker, {**fields, "next_wake": earliest},
                                 guard={"wakes": rule.get("wakes"), **(guard or {})}):
        return True
    return await rule_claims.release(db, rule, worker, {**fields, "next_wake": earliest,
                                                        "due": min(fields["due"], earliest)}, guard=guard)
