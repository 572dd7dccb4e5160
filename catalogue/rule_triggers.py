"""What tells the rule evaluator that a DID's content changed: attach, detach and refresh call
`content_changed`, which marks every rule on the DID or on a container above it `dirty`
(and bumps its `generation`, so an evaluation that read the old content does not clear the flag).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.collection_names import CONTAINER_CHILDREN
from kernel.db import Document, database_errors

RULES = "rules"
MAX_DEPTH = 64


async def ancestors(db: AsyncDatabase[Document], dids: Iterable[str]) -> set[str]:
    """The DIDs and every container above them (one `$in` query per level)."""
    seen = set(dids)
    level = set(seen)
    for _ in range(MAX_DEPTH):
        if not level:
            break
        with database_errors():
            # Index: container_children_by_child.
            links = await db[CONTAINER_CHILDREN].find({"child": {"$in": sorted(level)}}, {"container": 1}).to_list()
        level = {link["container"] for link in links} - seen
        seen |= level
    return seen


async def content_changed(db: AsyncDatabase[Document], dids: Iterable[str]) -> int:
    """Mark the rules on these DIDs (and on containers holding them) for re-evaluation."""
    affected = await ancestors(db, dids)
    with database_errors():
        # Index: rules_by_did.
        result = await db[RULES].update_many({"did": {"$in": sorted(affected)}},
                                             {"$set": {"dirty": True}, "$inc": {"generation": 1}})
    return result.modified_count
