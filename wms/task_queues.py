"""Task queues: waiting jobs grouped by what they need (sites, tags, cores, memory, group, priority).

Each queue is one small document holding its definition and the ids of its waiting jobs in
submission order. Popping the first id (`$pop` on the queue's `_id`) hands a job id to one
matcher, which then claims the job's attempt (`job_claims.claim_attempt`); the matcher never scans
the jobs collection. A killed job's id is removed with `$pull` to keep counts right; an id
left over (or queued twice by the watchdog's repair) is harmless because its attempt can be
claimed only once. Per-group counts of jobs at pilots (`group_usage`) feed the fair share; a
group's VO is the prefix of its stored name (`group_vo`), so the counts sum up per VO too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bson import Int64
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, IndexSpec, database_errors, increment
from kernel.principal import DEFAULT_VO

TASK_QUEUES = "task_queues"
# The ids waiting in each queue, apart from the definitions so that reading the definitions
# (every match does) stays cheap however long the queues are.
QUEUE_ENTRIES = "task_queue_entries"
GROUP_USAGE = "group_usage"

INDEXES = [
    # eligible_queues: multikey on sites, then the waiting count
    IndexSpec(TASK_QUEUES, [("sites", 1), ("waiting", 1)], name="tq_by_site"),
]


def group_vo(group: str) -> str:
    """The VO of a stored group name: `cta` for `cta:phys`; a bare name is the VO `local`'s
    (names are stored VO-qualified except in that VO, see `catalogue.vos.qualified`)."""
    vo, sep, _ = group.partition(":")
    return vo if sep else DEFAULT_VO


def entry(job_id: str, attempt: int) -> str:
    """A queue entry names the attempt, so an entry left over from an earlier attempt is inert."""
    return f"{job_id}:{attempt}"


@dataclass(frozen=True)
class QueueKey:
    """What jobs of one queue have in common. An empty `sites` means any site."""

    sites: tuple[str, ...]
    tags: tuple[str, ...]
    cpu: int
    memory_mb: int
    group: str
    priority: int

    @property
    def queue_id(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return "tq-" + hashlib.sha1(text.encode()).hexdigest()[:16]

    def definition(self) -> Document:
        return {
            "sites": list(self.sites) or ["*"],
            "tags": list(self.tags),
            "cpu": self.cpu,
            "memory_mb": self.memory_mb,
            "group": self.group,
            "priority": self.priority,
        }


async def enqueue(db: AsyncDatabase[Document], key: QueueKey, entries: Sequence[str]) -> str:
    """Append job attempts to their queue (created on first use); returns the queue id."""
    queue_id = key.queue_id
    with database_errors():
        await db[QUEUE_ENTRIES].update_one(
            {"_id": queue_id}, {"$push": {"entries": {"$each": list(entries)}}}, upsert=True
        )
        await db[TASK_QUEUES].update_one(
            {"_id": queue_id}, {"$setOnInsert": key.definition(), **increment({"waiting": len(entries)})}, upsert=True
        )
    return queue_id


async def eligible_queues(
    db: AsyncDatabase[Document], site: str, cpu: int, memory_mb: int, tags: Sequence[str]
) -> list[Document]:
    """Non-empty queues a pilot at `site` with these resources may take from (index tq_by_site)."""
    with database_errors():
        docs = await db[TASK_QUEUES].find(
            {"sites": {"$in": [site, "*"]}, "waiting": {"$gt": 0}, "cpu": {"$lte": cpu},
             "memory_mb": {"$lte": memory_mb}},
        ).to_list()
    offered = set(tags)
    return [d for d in docs if set(d.get("tags", [])) <= offered]


async def pop(db: AsyncDatabase[Document], queue_id: str) -> tuple[str, int] | None:
    """Take the oldest entry out of a queue atomically: (job id, attempt), or None when empty."""
    with database_errors():
        before = await db[QUEUE_ENTRIES].find_one_and_update(
            {"_id": queue_id}, {"$pop": {"entries": -1}}, return_document=ReturnDocument.BEFORE
        )
        if before is None or not before.get("entries"):
            await _counted_empty(db, queue_id)
            return None
        await _one_less(db, queue_id)
    job_id, _, attempt = str(before["entries"][0]).rpartition(":")
    return job_id, int(attempt)


async def _counted_empty(db: AsyncDatabase[Document], queue_id: str) -> None:
    """Correct the count of a queue found empty while counted otherwise (a concurrent pop won the
    last one). An enqueue's push and count may land between the pop and this write, which would
    set its job's count to 0 (its queue offered to no pilot until the watchdog's mender, minutes
    on): the entries are read again after it, and counted at least. (Its own `$inc` may then count
    one more than there is: the next pop finding it empty corrects that.)"""
    await db[TASK_QUEUES].update_one({"_id": queue_id}, {"$set": {"waiting": 0}})
    now = await db[QUEUE_ENTRIES].find_one({"_id": queue_id}, {"entries": 1})
    if now is not None and now.get("entries"):
        await db[TASK_QUEUES].update_one({"_id": queue_id}, {"$max": {"waiting": Int64(len(now["entries"]))}})


async def remove(db: AsyncDatabase[Document], queue_id: str, job_entry: str) -> bool:
    """Take one entry out of its queue; False when it was not there (popped already)."""
    with database_errors():
        result = await db[QUEUE_ENTRIES].update_one({"_id": queue_id}, {"$pull": {"entries": job_entry}})
        if result.modified_count:
            await _one_less(db, queue_id)
    return result.modified_count == 1


async def _one_less(db: AsyncDatabase[Document], queue_id: str) -> None:
    """One entry fewer in the queue's count, never below 0: a count already below its entries
    (an enqueue cut between its push and its count, then queued again by the watchdog's repair)
    would otherwise go negative, and the next job queued there would be counted 0 and offered to
    no pilot."""
    await db[TASK_QUEUES].update_one({"_id": queue_id, "waiting": {"$gt": 0}}, increment({"waiting": -1}))


async def all_queues(db: AsyncDatabase[Document]) -> list[Document]:
    with database_errors():
        return await db[TASK_QUEUES].find({}).sort("_id", 1).to_list()


async def group_usage(db: AsyncDatabase[Document], groups: Sequence[str]) -> dict[str, Document]:
    """Jobs at pilots and share per group (groups never seen have 0 running and share 1)."""
    with database_errors():
        docs = await db[GROUP_USAGE].find({"_id": {"$in": list(groups)}}).to_list()
    found = {d["_id"]: d for d in docs}
    return {g: found.get(g, {"_id": g, "running": 0, "share": 1.0}) for g in groups}


async def add_running(db: AsyncDatabase[Document], group: str, delta: int) -> None:
    with database_errors():
        await db[GROUP_USAGE].update_one(
            {"_id": group}, {**increment({"running": delta}), "$setOnInsert": {"share": 1.0}}, upsert=True
        )


async def set_share(db: AsyncDatabase[Document], group: str, share: float) -> None:
    with database_errors():
        await db[GROUP_USAGE].update_one(
            {"_id": group}, {"$set": {"share": share}, "$setOnInsert": {"running": 0}}, upsert=True
        )


async def all_group_usage(db: AsyncDatabase[Document]) -> list[Document]:
    with database_errors():
        return await db[GROUP_USAGE].find({}).sort("_id", 1).to_list()
