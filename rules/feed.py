"""The rules' reading of the catalogue's change feed (`catalogue.change_feed`): members attached
to or detached from a DID make the rules on it, and on every container above it, `dirty`
(`rules.triggers.content_changed`), so that the evaluator places the new content and
releases what left; a replica removed while rule locks protected it (an administrator's
override) makes the rules holding those locks `dirty` (the reaper's removals name those rules;
the others are looked up: `rules.locks.replicas_lost`), so that they copy the file again, and a
file removed with locked replicas (forced) makes the rules it names look again; a
replica that became available wakes the rules with a replicating lock on it
(`rules.wake.replicas_available`), so they turn ok without waiting for their poll.
Run by the rule evaluator at the start of each cycle, under the feed's lease.
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from kernel.db import Document
from rules.locks import make_dirty, replicas_lost
from rules.triggers import content_changed
from rules.wake import replicas_available

CONSUMER = "rule-evaluator"
CONTENT_EVENTS = ("attached", "detached")


async def mark_changed(db: AsyncDatabase[Document], events: list[change_feed.Event]) -> None:
    """Re-evaluate the rules of every DID whose content these events changed, and of every lock
    whose replica was removed (one pass per batch)."""
    dids = {e["did"] for e in events if e["kind"] in CONTENT_EVENTS}
    if dids:
        await content_changed(db, dids)
    # a removal that tells which rules locked its replica (the reaper's) marks those; the others
    # are looked up in the locks
    removals = [e for e in events if e["kind"] == "replica_removed" and "data" in e]
    await make_dirty(db, {rule for e in removals for rule in e["data"].get("lock_rules", ())})
    # a file removed with its locked replicas (forced) names the rules that locked them
    await make_dirty(db, {rule for e in events if e["kind"] == "file_removed"
                          for rule in e.get("data", {}).get("lock_rules", ())})
    removed = {(e["did"], e["data"]["se"]) for e in removals if "lock_rules" not in e["data"]}
    if removed:
        await replicas_lost(db, removed)
    # a replica found lost on storage (the auditor, suspicious reads): its locks copy it again
    lost = {(e["did"], e["data"]["se"]) for e in events
            if e["kind"] == "replica_status" and e.get("data", {}).get("status") == "lost"}
    if lost:
        await replicas_lost(db, lost)
    # a replica that became available (a transfer's end): the rules waiting on it look again now
    available = {(e["did"], e["data"]["se"]) for e in events
                 if e["kind"] == "replica_status" and e.get("data", {}).get("status") == "available"}
    if available:
        await replicas_available(db, available)


async def follow(db: AsyncDatabase[Document], worker: str, *, lease_s: float) -> int:
    """Handle the feed's new events for the rules; returns how many were read."""

    async def handle(events: list[change_feed.Event]) -> None:
        await mark_changed(db, events)

    return await change_feed.consume(db, CONSUMER, worker, handle, lease_s=lease_s)
