"""A subscription's `rules_created` and `errors`: each rule it made counted once, each refusal
kept once, whatever is cut short or handled again.

The subscriber makes a subscription's rules for a run of the change feed's `did_created` events,
then counts them in one write on the subscription; a daemon killed between its rules and their
count (which went uncounted: its retry found them made), or after both and before it saved its
place in the feed, is given the same events again. So each rule records the event it was made for
(`subscription_event`, its sequence number) and the subscription the last event it counted
(`counted_through`): an application counts the events after that one whose rule it made, or
found made for that very event, and moves `counted_through` in the same write, guarded by the
value it read (a concurrent application's count is read again, never added to twice). DIDs given
without their events (no feed) are counted as made, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, database_errors, increment, read_by_ids
from rules.triggers import RULES

SUBSCRIPTIONS = "subscriptions"
MAX_ERRORS = 1000  # refusals kept per subscription (`record`)
# Tries of the guarded count when concurrent applications keep moving `counted_through`.
RECORD_TRIES = 5

log = logging.getLogger("cairn.rules")


def uncounted(subscription: Document, position: int | None) -> bool:
    """Whether the event at `position` comes after those the subscription counted (None: no event)."""
    through = subscription.get("counted_through")
    return position is None or through is None or position > int(through)


async def made_for(db: AsyncDatabase[Document], subscription: str, existing: Mapping[str, int]) -> set[str]:
    """Of the rules `{rule id: event}` found made already, those the subscription made for that
    same event (an application cut short before its count); the others were made for an earlier
    one (the DID made again under its old name)."""
    found: set[str] = set()
    async for rule in read_by_ids(db[RULES], list(existing), {"subscription_event": 1},
                                  flt={"subscription": subscription}):
        if rule.get("subscription_event") == existing[rule["_id"]]:
            found.add(rule["_id"])
    return found


async def record(db: AsyncDatabase[Document], subscription: Document, made: Mapping[str, int | None],
                 errors: Mapping[str, tuple[str, int | None]]) -> None:
    """Count the rules `{DID: event}` made and keep the refusals `{DID key: (reason, event)}`, those
    of events not counted yet (`uncounted`), up to MAX_ERRORS refusals (the others only counted in
    `errors_dropped`, so a subscription refused on every dataset does not grow without bound)."""
    for _ in range(RECORD_TRIES):
        update, guard = _update(subscription, made, errors)
        if not update:
            return
        with database_errors():
            result = await db[SUBSCRIPTIONS].update_one({"_id": subscription["_id"], **guard}, update)
            if result.matched_count:
                return
            current = await db[SUBSCRIPTIONS].find_one({"_id": subscription["_id"]})
        if current is None:
            return  # removed meanwhile
        subscription = current
    log.warning("subscription %s: its count moved %d times while counting; not counted now",
                subscription["_id"], RECORD_TRIES)


def _update(subscription: Document, made: Mapping[str, int | None],
            errors: Mapping[str, tuple[str, int | None]]) -> tuple[Document, Document]:
    """The write counting what is not counted yet, and the guard it holds (`counted_through` as read)."""
    new = [did for did, at in made.items() if uncounted(subscription, at)]
    refused = sorted((key, why) for key, (why, at) in errors.items() if uncounted(subscription, at))
    room = max(0, MAX_ERRORS - len(subscription.get("errors") or {}))
    fields: dict[str, Any] = {f"errors.{k}": v for k, v in refused[:room]}
    counts = {"rules_created": len(new), "errors_dropped": len(refused) - len(refused[:room])}
    events = [at for at in (*made.values(), *(at for _, at in errors.values())) if at is not None]
    guard: Document = {}
    through = subscription.get("counted_through")
    if events and (through is None or max(events) > int(through)):
        fields["counted_through"] = max(events)
        guard = {"counted_through": through}
    if not (fields or any(counts.values())):
        return {}, guard
    return {**({"$set": fields} if fields else {}), **increment(counts)}, guard
