"""Task queues: waiting jobs grouped by what they need (sites, tags, cores, memory, group, priority).

Each queue is one small document holding its definition and the ids of its waiting jobs in
submission order. Popping the first id (`$pop` on the queue's `_id`) hands a job id to one
matcher, which then claims the job's attempt (`jobs.claim_attempt`); the matcher never scans
the jobs collection. A killed job's id is removed with `$pull` to keep counts right; an id
left over (or queued twice by the watchdog's repair) is harmless because its attempt can be
claimed only once. Per-group counts of jobs at pilots (`group_usage`) feed the fair share.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, IndexSpec, database_errors

TASK_QUEUES = "task_queues"
GROUP_USAGE = "group_usage"

INDEXES = [
    # eligible_queues: multikey on sites, then the waiting count
    IndexSpec(TASK_QUEUES, [("sites", 1), ("waiting", 1)], name="tq_by_site"),
]


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


async def enqueue(db: AsyncDatabase[Document], key: QueueKey, job_ids: Sequence[str]) -> str:
    """Append jobs to their queue (created on first use); returns the queue id."""
    queue_id = key.queue_id
    with database_errors():
        await db[TASK_QUEUES].update_one(
            {"_id": queue_id},
            {"$setOnInsert": key.definition(), "$push": {"jobs": {"$each": list(job_ids)}},
             "$inc": {"waiting": len(job_ids)}},
            upsert=True,
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
            {"jobs": 0},
        ).to_list()
    offered = set(tags)
    return [d for d in docs if set(d.get("tags", [])) <= offered]


async def pop(db: AsyncDatabase[Document], queue_id: str) -> str | None:
    """Take the oldest job id out of a queue atomically; None when it is empty."""
    with database_errors():
        before = await db[TASK_QUEUES].find_one_and_update(
            {"_id": queue_id, "waiting": {"$gt": 0}},
            {"$pop": {"jobs": -1}, "$inc": {"waiting": -1}},
            return_document=ReturnDocument.BEFORE,
        )
    if before is None or not before.get("jobs"):
        return None
    return str(before["jobs"][0])


async def remove(db: AsyncDatabase[Document], queue_id: str, job_id: str) -> bool:
    """Take one job out of its queue; False when a pilot popped it first."""
    with database_errors():
        result = await db[TASK_QUEUES].update_one(
            {"_id": queue_id, "jobs": job_id}, {"$pull": {"jobs": job_id}, "$inc": {"waiting": -1}}
        )
    return result.modified_count == 1


async def all_queues(db: AsyncDatabase[Document]) -> list[Document]:
    with database_errors():
        return await db[TASK_QUEUES].find({}, {"jobs": 0}).sort("_id", 1).to_list()


async def group_usage(db: AsyncDatabase[Document], groups: Sequence[str]) -> dict[str, Document]:
    """Jobs at pilots and share per group (groups never seen have 0 running and share 1)."""
    with database_errors():
        docs = await db[GROUP_USAGE].find({"_id": {"$in": list(groups)}}).to_list()
    found = {d["_id"]: d for d in docs}
    return {g: found.get(g, {"_id": g, "running": 0, "share": 1.0}) for g in groups}


async def add_running(db: AsyncDatabase[Document], group: str, delta: int) -> None:
    with database_errors():
        await db[GROUP_USAGE].update_one(
            {"_id": group}, {"$inc": {"running": delta}, "$setOnInsert": {"share": 1.0}}, upsert=True
        )


async def set_share(db: AsyncDatabase[Document], group: str, share: float) -> None:
    with database_errors():
        await db[GROUP_USAGE].update_one(
            {"_id": group}, {"$set": {"share": share}, "$setOnInsert": {"running": 0}}, upsert=True
        )
