"""Batch queues of a site, kept in the site registry: where the pilot factory sends pilots.

A queue lives inside its site's document (`queues.NAME`): which batch backend runs it (local or
slurm), the Slurm partition, the cores and memory of one slot, how many pilots may wait and run
at once, and the tags its pilots offer to jobs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import NAME_PATTERN, SITES
from kernel.db import Document, database_errors
from kernel.errors import NotFound

# A queue's name is a key of its site's document (`queues.NAME`): a '.' there would be a path
# (`short.q` stored as `queues.short.q`, a record no listing can read), so unlike an SE's or a
# site's name it holds no dot.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class QueueSettings(BaseModel):
    """A queue's configuration (the body of PUT /sites/{name}/queues/{queue})."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "slurm"] = "local"
    partition: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9_.-]*$")
    cores: int = Field(1, ge=1, le=1024)
    memory_mb: int = Field(2048, ge=1, le=4_000_000)
    max_waiting: int = Field(10, ge=0, le=10_000)
    max_running: int = Field(50, ge=0, le=100_000)
    tags: list[str] = Field(default_factory=list, max_length=50)
    enabled: bool = True


class SiteQueue(QueueSettings):
    name: str = Field(..., pattern=QUEUE_NAME_PATTERN)
    site: str = Field(..., pattern=NAME_PATTERN)


async def put_queue(db: AsyncDatabase[Document], queue: SiteQueue) -> SiteQueue:
    """Create or replace a queue of an existing site."""
    fields = queue.model_dump(exclude={"name", "site"})
    with database_errors():
        result = await db[SITES].update_one({"_id": queue.site}, {"$set": {f"queues.{queue.name}": fields}})
    if result.matched_count == 0:
        raise NotFound(f"site {queue.site!r} does not exist")
    return queue


async def delete_queue(db: AsyncDatabase[Document], site: str, name: str) -> None:
    with database_errors():
        result = await db[SITES].update_one({"_id": site, f"queues.{name}": {"$exists": True}},
                                            {"$unset": {f"queues.{name}": ""}})
    if result.matched_count == 0:
        raise NotFound(f"site {site!r} has no queue {name!r}")


async def list_queues(db: AsyncDatabase[Document], site: str | None = None) -> list[SiteQueue]:
    """Every queue (of one site), by site then name."""
    with database_errors():
        docs = await db[SITES].find({"_id": site} if site else {"queues": {"$exists": True}},
                                    {"queues": 1}).sort("_id", 1).to_list()
    return [SiteQueue(name=name, site=doc["_id"], **fields)
            for doc in docs for name, fields in sorted((doc.get("queues") or {}).items())]
