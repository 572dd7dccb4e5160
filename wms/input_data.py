"""Reading the catalogue for jobs: the input files' replicas and the SEs they sit on.

One bulk query per batch of jobs, whatever the number of LFNs (`_id` index of `files`).
Only the fields placement needs are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import SES
from kernel.db import Document, database_errors

FILES = "files"


@dataclass(frozen=True)
class SiteStore:
    """What placement needs to know about one SE."""

    name: str
    site: str
    kind: str
    read_enabled: bool


async def files_of(db: AsyncDatabase[Document], lfns: Iterable[str]) -> dict[str, Document]:
    """The file documents of these LFNs (absent LFNs are simply missing from the answer)."""
    wanted = sorted(set(lfns))
    if not wanted:
        return {}
    with database_errors():
        docs = await db[FILES].find(
            {"_id": {"$in": wanted}},
            {"_id": 1, "size": 1, "adler32": 1, "owner": 1, "group": 1, "mode": 1, "replicas": 1},
        ).to_list()
    return {doc["_id"]: doc for doc in docs}


async def storage_elements(db: AsyncDatabase[Document]) -> dict[str, SiteStore]:
    """Every SE by name (a grid has hundreds, not millions: read them all at once)."""
    with database_errors():
        docs = await db[SES].find({}, {"_id": 1, "site": 1, "kind": 1, "read_enabled": 1}).to_list()
    return {
        d["_id"]: SiteStore(d["_id"], d.get("site", ""), d.get("kind", "disk"), d.get("read_enabled", True))
        for d in docs
    }


async def known_sites(db: AsyncDatabase[Document]) -> set[str]:
    with database_errors():
        return {str(s) for s in await db[SES].distinct("site")}
