"""Taking back the directories a call made on its way (mkdir -p) when what it made them for was
refused after all (a registration whose files a chmod refused once they were in).

A directory is taken back only while it is still as the call made it (its `_id`, owner and
`modified` as written: a chmod, chown or metadata change since keeps it) and empty. As an rmdir
does (`catalogue.namespace.remove`): delete, then look below; an entry made below it in that
moment brings it back (writers look for their directories after their insert and give up)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.children import subtree_range
from catalogue.collection_names import FILES
from catalogue.directories import DIRECTORIES, insert_ignoring_duplicates
from kernel.db import Document, database_errors, page_by_id


async def take_back_made(db: AsyncDatabase[Document], owner: str, made: Iterable[str], at: dt.datetime) -> list[str]:
    """Remove the directories `made` by a call of `owner` at `at` that are still its own and
    empty, deepest first; returns those removed. Two probes and a delete per directory: only
    for a call that was refused after making them."""
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored (BSON keeps milliseconds)
    removed = []
    for path in sorted(made, key=lambda p: (-p.count("/"), p)):
        if await _any_below(db, path):
            continue
        with database_errors():
            doc = await db[DIRECTORIES].find_one_and_delete({"_id": path, "owner": owner, "modified": at})
        if doc is None:
            continue
        if await _any_below(db, path):  # made below it between the look and the delete
            await insert_ignoring_duplicates(db[DIRECTORIES], [doc])
            continue
        removed.append(path)
    return removed


async def _any_below(db: AsyncDatabase[Document], path: str) -> bool:
    low, high = subtree_range(path)
    return bool(await page_by_id(db[DIRECTORIES], {}, {"_id": 1}, after=low, before=high, size=1)
                or await page_by_id(db[FILES], {}, {"_id": 1}, after=low, before=high, size=1))
