"""Removing a VO (`cairn vo delete`): only once nothing of it is left in the catalogue and no
work of it is open in the packages above it.

What counts as left: files and directories below the VO's roots (the empty root directories
themselves go with the VO), datasets or containers in its DID scopes, and each `OpenWork` the
assembly gives (open jobs, rules, requests, subscriptions, transformations: their packages count
them, as the catalogue may not import them; left behind, they would stay owned by a VO whose
name is retired). Counting stops at `COUNT_LIMIT` per kind, enough to name what remains.
There is no transaction: work a member submits between the count and the deletion stays (after
it, the VO's tokens are refused).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import namespace, vos
from catalogue.collection_names import FILES
from catalogue.datasets import DATASETS
from catalogue.directories import DIRECTORIES
from catalogue.lfn import ROOT, descendant_pattern
from kernel.db import Document, database_errors
from kernel.principal import Principal

COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class OpenWork:
    """One kind of a VO's work that a package above the catalogue holds: `count(db, vo, limit)`
    counts what of it is open (not in a final state; at most `limit`), `what` names it and
    `end_with` is the command that ends it."""

    what: str
    end_with: str
    count: Callable[[AsyncDatabase[Document], str, int], Awaitable[int]]


def _counted(count: int, what: str) -> str:
    return f"{'at least ' if count >= COUNT_LIMIT else ''}{count} {what}"


async def remains(db: AsyncDatabase[Document], vo: vos.Vo, open_work: Sequence[OpenWork] = ()) -> list[str]:
    """What of VO `vo` is still catalogued or open, one phrase per kind and root or scope (empty: nothing)."""
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
    for work in open_work:
        count = await work.count(db, vo.name, COUNT_LIMIT)
        if count:
            left.append(_counted(count, f"{work.what} (end them with {work.end_with})"))
    return left


async def delete_vo(db: AsyncDatabase[Document], principal: Principal, name: str,
                    open_work: Sequence[OpenWork] = ()) -> None:
    """Remove VO `name` and its (empty) root directories; 409 naming what remains otherwise."""
    vo = await vos.get_vo(db, name)
    await vos.delete_vo(db, name, await remains(db, vo, open_work))
    for root in vo.roots:
        if root != ROOT:
            await namespace.remove(db, principal, root)
