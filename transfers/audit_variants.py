"""Storage paths of URL variants in an audit: `LFN!tag` (`catalogue.replica_urls.variant_url`;
each attempt of a job writes its outputs at one). Such a path holds the bytes of LFN's replica
when the replica is registered at that variant, and is dark otherwise; it is never an LFN of its
own. Compared as one, a job output's replica was found lost (nothing at the LFN's own path) and
its bytes dark, which cleaning deleted. The auditor sets these paths aside from the storage
stream and settles them against the catalogue a batch at a time (`Variants`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.replica_urls import VARIANT_MARK, se_url
from catalogue.storage_elements import StorageElement
from kernel.db import Document
from kernel.errors import InvalidInput
from transfers.audit_compare import StorageEntry

BATCH = 1000  # variants waiting before they are settled


def tag_of(se: StorageElement, lfn: str, url: Any) -> str:
    """The variant tag of a replica of lfn on se registered at `url` ('' for none)."""
    try:
        return se_url(se, lfn, url if isinstance(url, str) and url else None).partition(VARIANT_MARK)[2]
    except InvalidInput:
        return ""


async def registered_tags(db: AsyncDatabase[Document], se: StorageElement, lfns: Iterable[str]) -> dict[str, str]:
    """The variant tag ('' for none) of the replica on se of each file among lfns that has one."""
    files = await fetch_files(db, set(lfns), {"replicas.se": 1, "replicas.url": 1})
    tags = {}
    for lfn, doc in files.items():
        replica = next((r for r in doc.get("replicas", []) if r.get("se") == se.name), None)
        if replica is not None:
            tags[lfn] = tag_of(se, lfn, replica.get("url"))
    return tags


class Variants:
    """The variant paths one audit met: waiting to be settled, or found to be a replica's bytes."""

    def __init__(self, db: AsyncDatabase[Document], se: StorageElement) -> None:
        self.db, self.se = db, se
        self.waiting: dict[str, StorageEntry] = {}
        self.found: dict[str, str] = {}  # LFN -> the tag its replica is registered and stored at

    async def aside(self, stream: AsyncIterator[StorageEntry],
                    settle: Callable[[], Awaitable[None]]) -> AsyncIterator[StorageEntry]:
        """The storage stream without variant paths (kept here; `settle` once BATCH wait)."""
        async for entry in stream:
            if VARIANT_MARK not in entry.lfn:
                yield entry
                continue
            self.waiting[entry.lfn] = entry
            if len(self.waiting) >= BATCH:
                await settle()

    async def settle(self) -> list[StorageEntry]:
        """Settle the waiting paths: those holding their LFN's replica are remembered (`seen_at`);
        returns the others, which no replica stands for."""
        waiting, self.waiting = self.waiting, {}
        if not waiting:
            return []
        tags = await registered_tags(self.db, self.se, (path.partition(VARIANT_MARK)[0] for path in waiting))
        leftovers = []
        for path, entry in waiting.items():
            lfn, _, tag = path.partition(VARIANT_MARK)
            if tag and tags.get(lfn) == tag:
                self.found[lfn] = tag
            else:
                leftovers.append(entry)
        return leftovers

    def seen_at(self, lfn: str, tag: str) -> bool:
        """Whether storage holds lfn's replica at its variant `tag` (forgotten once asked: the
        catalogue side names each replica once, right after the storage side passed its paths)."""
        if self.waiting.pop(f"{lfn}{VARIANT_MARK}{tag}", None) is not None:
            return True
        if self.found.get(lfn) == tag:
            del self.found[lfn]
            return True
        return False
