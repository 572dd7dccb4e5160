"""Removing a VO (`cairn vo delete`): only once nothing of it is left in the catalogue.

What counts as left: files and directories below the VO's roots (the empty root directories
themselves go with the VO) and datasets or containers in its DID scopes. Counting stops at
`COUNT_LIMIT` per kind, enough to name what remains.
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import namespace, vos
from catalogue.collection_names import FILES
from catalogue.datasets import DATASETS
from catalogue.directories import DIRECTORIES
from catalogue.lfn import ROOT, descendant_pattern
from kernel.db import Document, database_errors
from kernel.principal import Principal

COUNT_LIMIT = 10_000


def _counted(count: int, what: str) -> str:
    return f"{'at least ' if count >= COUNT_LIMIT else ''}{count} {what}"


async def remains(db: AsyncDatabase[Document], vo: vos.Vo) -> list[str]:
    """What of VO `vo` is still catalogued, one phrase per kind and root or scope (empty: nothing)."""
    left = []
    with database_errors():
        for root in vo.roots:
            below = {"_id": {"$regex": descendant_pattern(root)}}
            for collection, what in ((FILES, "file(s)"), (DIRECTORIES, "directorie(s)")):
                count = await db[collection].count_documents(below, limit=COUNT_LIMIT)
                if count:
                    left.append(_counted(count, f"{what} below {root}"))
        for scope in (s for s in vo.scopes if s != "*"):
            count = await db[DATASETS].count_documents({"scope": scope}, limit=COUNT_LIMIT)
            if count:
                left.append(_counted(count, f"dataset(s) or container(s) in scope {scope}"))
    return left


async def delete_vo(db: AsyncDatabase[Document], principal: Principal, name: str) -> None:
    """Remove VO `name` and its (empty) root directories; 409 naming what remains otherwise."""
    vo = await vos.get_vo(db, name)
    await vos.delete_vo(db, name, await remains(db, vo))
    for root in vo.roots:
        if root != ROOT:
            await namespace.remove(db, principal, root)
