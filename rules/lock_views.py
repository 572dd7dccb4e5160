"""The locks of a rule a caller is shown. A lock names its file (its LFN is in the lock and in its
id), and a rule on a dataset is seen by the dataset's readers, whose files keep their own modes:
a lock on a file the caller cannot reach is left out, as dataset contents leave the file out
(hidden = missing)."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import visible_files
from kernel.db import Document
from kernel.principal import Principal
from rules import locks as rule_locks

SCANNED_PER_PAGE = 10  # stored pages one page of locks reads at most once it has a lock to show
SCANNED_ROWS = 1000  # stored locks read at a time past hidden ones, whatever the page's limit


async def visible_locks(db: AsyncDatabase[Document], principal: Principal, rule_id: str, *,
                        state: str | None, after: str | None, limit: int) -> tuple[list[Document], str | None]:
    """One page of the rule's locks on files the caller can reach, and the `after` of the next
    page (the id of a lock shown: a hidden lock's id names a hidden file), None at the end. Stored
    locks are read until `limit` are shown or the end, or, once one is shown, at most
    SCANNED_PER_PAGE reads (the page may then come back shorter)."""
    shown: list[Document] = []
    cursor, scanned = after, 0
    while True:
        size = limit if scanned == 0 else max(limit, SCANNED_ROWS)
        page = await rule_locks.list_locks(db, rule_id, state=state, after=cursor, limit=size + 1)
        page, further = page[:size], len(page) > size
        seen = None if principal.is_global_admin else await visible_files(db, principal, {x["lfn"] for x in page})
        shown += [x for x in page if seen is None or x["lfn"] in seen]
        cursor, scanned = (page[-1]["_id"] if further else None), scanned + 1
        if len(shown) >= limit or cursor is None or (shown and scanned >= SCANNED_PER_PAGE):
            break
    more = len(shown) > limit or cursor is not None
    shown = shown[:limit]
    return shown, shown[-1]["_id"] if more and shown else None
