"""Marking rules for re-evaluation when a DID's content changed: the rule evaluator reads the
attached/detached events of the change feed (`rules.feed`) and calls `content_changed`,
which marks every rule on the DID or on a container above it `dirty` (and bumps its
`generation`, so an evaluation that read the old content does not clear the flag).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.dataset_contents import linked_dids
from kernel.db import Document, database_errors, find_by_values, increment
from kernel.marks import by_ids

RULES = "rules"


async def ancestors(db: AsyncDatabase[Document], dids: Iterable[str]) -> set[str]:
    """The DIDs and every container above them (`dataset_contents.linked_dids`, upwards)."""
    starts = set(dids)
    above, _ = await linked_dids(db, starts, down=False)
    return starts | above


async def content_changed(db: AsyncDatabase[Document], dids: Iterable[str]) -> int:
    """Mark the rules on these DIDs (and on containers holding them) for re-evaluation."""
    affected = await ancestors(db, dids)
    # Index: rules_by_did (`find_by_values`: one indexed `$in` on the embedded database too), then `_id`.
    ids = sorted(doc["_id"] for doc in await find_by_values(db[RULES], "did", affected, {"_id": 1}))
    modified = 0
    with database_errors():
        for flt in by_ids(ids):
            modified += (await db[RULES].update_many(flt, {"$set": {"dirty": True}, **increment({"generation": 1})})
                         ).modified_count
    return modified
