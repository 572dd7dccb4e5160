"""The direct children of a directory, read by `_id` ranges that jump over its subdirectories.

An entry's `_id` is its path, so everything below a directory `D` is the `_id` range `D/`..`D0`
('0' follows '/'): `D`'s children in name order, with each subdirectory's subtree (`D/s/`..`D/s0`)
in between. Filtering `parent == D` over that range costs the whole subtree on a database that
narrows only by `_id` (the embedded FerretDB). Here every query is a bare `_id` range instead: a
record found deeper down, `D/s/...`, names a subtree to jump over, and the next query starts at
`D/s0`. A listing then costs its children plus a short page per subdirectory that has records in
the collection, on any database, whatever the subtrees hold.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kernel.db
from kernel.db import Document, page_by_id


def subtree_range(path: str) -> tuple[str, str]:
    """The `_id` bounds (both exclusive) of everything below `path`."""
    prefix = path.rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"


async def direct_children(
    collection: Any, path: str, projection: Any = None, *, after: str | None = None, limit: int | None = None,
) -> AsyncIterator[Document]:
    """The records of `collection` directly below `path` whose names come after `after`, in name
    order, at most `limit` of them; memory holds one page."""
    prefix, end = subtree_range(path)
    cut = len(prefix)
    last: str = prefix + (after or "")
    jump_to: str | None = None  # the end of the subtree being jumped over (inclusive lower bound)
    # Pages start at one record, and again after every jump (the rest of a page that meets a
    # subtree is read in vain), and double while they hold only children, up to kernel.db.PAGE:
    # records read in vain stay below twice the children listed plus one per subtree jumped over.
    size, left = 1, limit
    while left is None or left > 0:
        docs = await page_by_id(collection, {}, projection, after=None if jump_to else last, since=jump_to,
                                before=end, size=size)
        jumped = False
        for doc in docs:
            key = doc["_id"]
            if jump_to is not None and key < jump_to:
                continue
            slash = key.find("/", cut)
            if slash >= 0:
                jump_to, jumped = key[:slash] + "0", True
                continue
            jump_to = None
            yield doc
            if left is not None:
                left -= 1
                if left == 0:
                    return
        if len(docs) < size:
            return
        last = docs[-1]["_id"]
        size = 1 if jumped else min(2 * size, kernel.db.PAGE)
