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

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import kernel.db
from kernel.db import Document, page_by_id, read_ahead


def subtree_range(path: str) -> tuple[str, str]:
    """The `_id` bounds (both exclusive) of everything below `path`."""
    prefix = path.rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"


@dataclass
class _Walk:
    """Where the next page starts: after the last key read, or at the end of the subtree being
    jumped over (`jump_to`, an inclusive lower bound), and how many records it reads."""

    last: str
    jump_to: str | None = None
    size: int = 1


def _take(docs: list[Document], walk: _Walk, cut: int) -> tuple[list[Document], bool]:
    """The children among one page's records (those deeper down set `walk.jump_to`), and
    whether the page met a subtree."""
    children: list[Document] = []
    jumped = False
    for doc in docs:
        key = doc["_id"]
        if walk.jump_to is not None and key < walk.jump_to:
            continue
        slash = key.find("/", cut)
        if slash >= 0:
            walk.jump_to, jumped = key[:slash] + "0", True
            continue
        walk.jump_to = None
        children.append(doc)
    return children, jumped


async def direct_children(
    collection: Any, path: str, projection: Any = None, *, after: str | None = None, limit: int | None = None,
) -> AsyncIterator[list[Document]]:
    """The records of `collection` directly below `path` whose names come after `after`, in name
    order, at most `limit` of them, a page at a time; the next page is read while the caller
    handles this one (memory holds two pages)."""
    prefix, end = subtree_range(path)
    cut = len(prefix)
    walk = _Walk(prefix + (after or ""))

    def read() -> Coroutine[Any, Any, list[Document]]:
        return page_by_id(collection, {}, projection, after=None if walk.jump_to else walk.last,
                          since=walk.jump_to, before=end, size=walk.size)

    # Pages start at one record, and again after every jump (the rest of a page that meets a
    # subtree is read in vain), and double while they hold only children, up to
    # kernel.db.STREAM_PAGE: records read in vain stay below twice the children listed plus one
    # per subtree jumped over.
    left = limit
    pending: asyncio.Future[list[Document]] | None = await read_ahead(read())
    try:
        while pending is not None:
            docs = await pending
            pending = None
            children, jumped = _take(docs, walk, cut)
            if left is not None:
                children = children[:left]
                left -= len(children)
            if len(docs) == walk.size and (left is None or left > 0):
                walk.last = docs[-1]["_id"]
                walk.size = 1 if jumped else min(2 * walk.size, kernel.db.STREAM_PAGE)
                pending = await read_ahead(read())
            if children:
                yield children
    finally:
        if pending is not None:
            pending.cancel()
