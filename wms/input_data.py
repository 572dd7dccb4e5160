"""What placement needs to know about the SEs: their site, kind and read switch.

(The input files' replicas come from `catalogue.replicas.get_replicas`, one query per batch.)
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import SES
from kernel.db import Document, database_errors


@dataclass(frozen=True)
class SiteStore:
    """What placement needs to know about one SE."""

    name: str
    site: str
    kind: str
    read_enabled: bool
    write_enabled: bool = True


async def storage_elements(db: AsyncDatabase[Document]) -> dict[str, SiteStore]:
    """Every SE by name (a grid has hundreds, not millions: read them all at once)."""
    with database_errors():
        docs = await db[SES].find({}, {"_id": 1, "site": 1, "kind": 1, "read_enabled": 1,
                                        "write_enabled": 1}).to_list()
    return {
        d["_id"]: SiteStore(d["_id"], d.get("site", ""), d.get("kind", "disk"), d.get("read_enabled", True),
                            d.get("write_enabled", True))
        for d in docs
    }


async def known_sites(db: AsyncDatabase[Document]) -> set[str]:
    with database_errors():
        return {str(s) for s in await db[SES].distinct("site")}
