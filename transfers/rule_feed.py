"""The rules' reading of the catalogue's change feed (`catalogue.change_feed`): members attached
to or detached from a DID make the rules on it, and on every container above it, `dirty`
(`catalogue.rule_triggers.content_changed`), so that the evaluator places the new content and
releases what left. Run by the rule evaluator at the start of each cycle, under the feed's lease.
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, rule_locks
from catalogue.rule_triggers import content_changed
from kernel.db import Document

CONSUMER = "rule-evaluator"
CONTENT_EVENTS = ("attached", "detached")


async def mark_changed(db: AsyncDatabase[Document], events: list[change_feed.Event]) -> None:
    """Re-evaluate the rules of every DID whose content these events changed (one pass per batch)."""
    dids = {e["did"] for e in events if e["kind"] in CONTENT_EVENTS}
    if dids:
        await content_changed(db, dids)
    # a replica found lost on storage (the auditor, suspicious reads): its locks copy it again
    lost = {(e["did"], e["data"]["se"]) for e in events
            if e["kind"] == "replica_status" and e.get("data", {}).get("status") == "lost"}
    for lfn, se in sorted(lost):
        await rule_locks.replica_lost(db, lfn, se)


async def follow(db: AsyncDatabase[Document], worker: str, *, lease_s: float) -> int:
    """Handle the feed's new events for the rules; returns how many were read."""

    async def handle(events: list[change_feed.Event]) -> None:
        await mark_changed(db, events)

    return await change_feed.consume(db, CONSUMER, worker, handle, lease_s=lease_s)
