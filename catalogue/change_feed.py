"""The catalogue's change feed: an append-only log of what changed (file registered or removed,
replica added, removed or changed status, attached or detached, metadata changed, dataset or
container created), read by the daemons that react to it (rules; transformations later) from a position they persist.

Writing: each catalogue call that changes a batch appends that batch's events with one counter
`$inc` (a run of sequence numbers) and one `insert_many`, right after the change itself. The
events are stored in blocks: one document per up to BLOCK consecutive events of one append, its
`_id` the first sequence number (as fixed-width decimal text, `key`, so that reading after a
position is a range of the `_id` index on any database, see `kernel.db.ID_ORDER`), with `last`
(its last sequence number), `at` and `events`, the block's events as one JSON text (no query looks
inside a block, and one text value is far cheaper to store than a thousand nested documents);
so 20,000 events are 20 documents, not 20,000. (A document whose `events` is a list, or that has
no `events`, is read too: the layouts before.)
`read` unrolls the blocks into plain `Event`s numbered by sequence. Sequence numbers increase
in allocation order; a writer that allocated a run may insert its blocks after a later writer
inserted its own, so a reader can meet a hole that fills a moment later.

Reading: a consumer (`consume`) holds the named lease `feed:NAME` (`kernel.lease`), reads the
events after its persisted position in order, whole blocks at a time (up to `batch` events;
only a block bigger than that is split), stops at a hole younger than SETTLE_S (it will be read
next time), hands the contiguous run to its handler and only then saves its new position, so
positions normally fall at block ends. Guarantees: at-least-once (a consumer killed after
handling and before saving sees those events again); in sequence order, so the changes of one
DID (or LFN) made one after the other arrive in that order (two calls racing on the same DID
may be numbered either way); a hole (a run allocated but not inserted) older than SETTLE_S is
taken as a writer that died between its change and its insert, and is skipped: that change's
events are lost. Consumers therefore treat an event as "look again at this DID", never as the
state itself.

Trimming (`trim`, called by the rule evaluator once a minute): a block is deleted once every
registered consumer has passed its last event and it is older than `rules.feed_retention_s`
(a block a consumer is inside of stays whole); a consumer that stops for good must be
unregistered (`unregister`), or it holds the feed back.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypedDict

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from kernel import lease
from kernel.db import ID_ORDER, READ_SLICE, Document, database_errors, increment

EVENTS = "catalogue_events"
CONSUMERS = "feed_consumers"
SEQUENCE = "feed_sequence"
SETTLE_S = 30.0
KEY_DIGITS = 20  # an int64 sequence number in full
BLOCK = 1000  # events per stored document, at most

Kind = Literal["file_registered", "file_removed", "replica_added", "replica_removed", "replica_status",
               "attached", "detached", "metadata_changed", "did_created"]


class Event(TypedDict, total=False):
    """One stored event: `did` is the DID or LFN it is about; `data` what else it says."""

    _id: int
    kind: Kind
    did: str
    at: dt.datetime
    data: dict[str, Any]


class Consumer(TypedDict, total=False):
    """A registered consumer: the last sequence number it handled."""

    _id: str
    position: int
    updated: dt.datetime


def event(kind: Kind, did: str, **data: Any) -> Event:
    """An event to append (its `_id` and `at` are given by `append`)."""
    return {"kind": kind, "did": did, "data": data} if data else {"kind": kind, "did": did}


def key(seq: int) -> str:
    """The stored `_id` of sequence number `seq`: zero-padded decimal, sorting like the numbers."""
    return f"{seq:0{KEY_DIGITS}d}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stored_block(first: int, events: Sequence[Event], at: dt.datetime) -> Document:
    """The stored document of a block: events `first` .. `first + len(events) - 1`, appended at `at`."""
    body = [{k: v for k, v in e.items() if k not in ("_id", "at")} for e in events]
    return {"_id": key(first), "last": first + len(events) - 1, "at": at,
            "events": json.dumps(body, separators=(",", ":"))}


def _unrolled(doc: Document) -> list[Event]:
    """The events of a stored block, numbered; a document without `events` is one event (the
    layout before blocks, read as a block of one)."""
    first, at = int(doc["_id"]), doc["at"]
    if "events" not in doc:
        return [Event(**{**doc, "_id": first})]  # type: ignore[typeddict-item]
    stored = doc["events"]
    body = json.loads(stored) if isinstance(stored, str) else stored
    return [Event(**{**e, "_id": first + i, "at": at}) for i, e in enumerate(body)]


async def append(db: AsyncDatabase[Document], events: Sequence[Event]) -> None:
    """Append a batch of events: one `$inc` allocates their sequence numbers, one insert writes
    them as blocks of up to BLOCK events."""
    if not events:
        return
    with database_errors():
        counter = await db[SEQUENCE].find_one_and_update(
            {"_id": EVENTS}, increment({"n": len(events)}), upsert=True, return_document=ReturnDocument.AFTER)
        assert counter is not None
        first = int(counter["n"]) - len(events) + 1
        at = _now()
        await db[EVENTS].insert_many([stored_block(first + start, events[start:start + BLOCK], at)
                                      for start in range(0, len(events), BLOCK)], ordered=False)


async def _blocks_after(db: AsyncDatabase[Document], after: int, limit: int, *,
                        whole: bool) -> tuple[list[Event], bool]:
    """The events after `after` in order, at most `limit`: with `whole`, ending at a block's end
    unless the first block alone holds more than `limit`; and whether it stopped at `limit`
    (more may follow) rather than at the end of the feed. Each query is an `_id` range over the
    blocks that start within the next `limit` sequence numbers, so a read holds at most
    `limit + BLOCK` events whatever the blocks' sizes; a window left short (the end of the feed,
    or a hole: trimmed events, a dead writer's run) is followed by one query for where the feed
    goes on."""
    found: list[Event] = []
    low = max(0, after - BLOCK + 1)  # the block holding after + 1 starts after this
    upto = after  # sequence numbers looked at so far
    while True:
        high = upto + limit - len(found)
        with database_errors():
            docs = await db[EVENTS].find({"_id": {"$gt": key(low), "$lte": key(high)}}, comment=ID_ORDER) \
                .sort("_id", 1).to_list()
        for doc in docs:
            events = [e for e in _unrolled(doc) if e["_id"] > after]
            if whole and found and len(found) + len(events) > limit:
                return found, True
            found.extend(events[:limit - len(found)])
            if len(found) >= limit:
                return found, True
        low, upto = high, max(high, found[-1]["_id"] if found else high)
        with database_errors():
            later = await db[EVENTS].find({"_id": {"$gt": key(upto)}}, {"_id": 1}, comment=ID_ORDER) \
                .sort("_id", 1).limit(1).to_list()
        if not later:
            return found, False
        low = upto = int(later[0]["_id"]) - 1


async def read(db: AsyncDatabase[Document], after: int, limit: int) -> list[Event]:
    """Stored events after sequence number `after`, in order (holes included as gaps), at most `limit`."""
    events, _ = await _blocks_after(db, after, limit, whole=False)
    return events


def settled(events: Sequence[Event], after: int, *, settle_before: dt.datetime) -> list[Event]:
    """The run of events a consumer at `after` may handle now: up to the first hole whose
    following event was allocated after `settle_before` (its writer may still insert it)."""
    run: list[Event] = []
    expected = after + 1
    for e in events:
        if e["_id"] != expected and e["at"] > settle_before:
            break
        run.append(e)
        expected = e["_id"] + 1
    return run


async def position(db: AsyncDatabase[Document], name: str) -> int:
    """The consumer's saved position (registering it at 0, the start of the feed, if new)."""
    with database_errors():
        doc = await db[CONSUMERS].find_one_and_update(
            {"_id": name}, {"$setOnInsert": {"position": 0, "updated": _now()}}, upsert=True,
            return_document=ReturnDocument.AFTER)
    assert doc is not None
    return int(doc["position"])


async def _save(db: AsyncDatabase[Document], name: str, last: int) -> None:
    with database_errors():
        await db[CONSUMERS].update_one({"_id": name, "position": {"$lt": last}},
                                       {"$set": {"position": last, "updated": _now()}})


async def consumers(db: AsyncDatabase[Document]) -> list[dict[str, Any]]:
    """Every registered consumer and its position."""
    with database_errors():
        docs = await db[CONSUMERS].find({}).sort("_id", 1).to_list()
    return [{"name": d["_id"], "position": int(d["position"]), "updated": d.get("updated")} for d in docs]


async def unregister(db: AsyncDatabase[Document], name: str) -> None:
    """Forget a consumer that stopped for good (so that it no longer holds back trimming)."""
    with database_errors():
        await db[CONSUMERS].delete_one({"_id": name})


Handler = Callable[[list[Event]], Awaitable[None]]


async def consume(db: AsyncDatabase[Document], name: str, worker: str, handler: Handler, *, lease_s: float,
                  batch: int = 1000, max_batches: int = 10) -> int:
    """Hand the new events to `handler`, batch by batch, under the lease `feed:NAME`, saving the
    position after each batch handled; returns how many were handled (0 when another process
    holds the lease, or nothing is new)."""

    async def run() -> int:
        handled = 0
        at = await position(db, name)
        for _ in range(max_batches):
            stored, more = await _blocks_after(db, at, batch, whole=True)
            events = settled(stored, at, settle_before=_now() - dt.timedelta(seconds=SETTLE_S))
            if not events:
                break
            await handler(events)
            at = events[-1]["_id"]
            await _save(db, name, at)
            handled += len(events)
            if not more or len(events) < len(stored):  # the end of the feed, or a young hole
                break
        return handled

    _, handled = await lease.under_named_lease(db, f"feed:{name}", worker, run(), lease_s=lease_s)
    return handled or 0


async def trim(db: AsyncDatabase[Document], *, keep_s: float) -> int:
    """Delete the blocks whose events every registered consumer has passed and that are older
    than keep_s; returns how many events went."""
    with database_errors():
        consumers = await db[CONSUMERS].find({}, {"position": 1}).to_list()
        if not consumers:
            return 0
        passed = min(int(c["position"]) for c in consumers)
        old = await db[EVENTS].find(
            {"_id": {"$lte": key(passed)}, "at": {"$lt": _now() - dt.timedelta(seconds=keep_s)}},
            {"last": 1}, comment=ID_ORDER).sort("_id", 1).to_list()
        ends = [(d["_id"], int(d["last"] if "last" in d else d["_id"])) for d in old]
        done = [(first, last) for first, last in ends if last <= passed]
        for start in range(0, len(done), READ_SLICE):
            await db[EVENTS].delete_many({"_id": {"$in": [i for i, _ in done[start:start + READ_SLICE]]}})
    return sum(last - int(first) + 1 for first, last in done)
