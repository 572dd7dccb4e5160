"""Which call last added, and which last removed, a file's replica on each SE (and which last
overwrote the file): how a bulk write that partly missed finds the writes that were its own, so
that a replica added or removed by several calls at once is counted on its SE's usage once.

A replica push (`catalogue.files.push_replicas`) or pull (`catalogue.replicas.pull_replicas`) is
one guarded update per file, which also sets, in the same document, `replica_writers.<SE>.add`
(or `.remove`) to the call's token; an overwrite (`catalogue.replicas.overwrite_files`: a file's
content and replicas at once) sets `replica_writers.~.overwrite`. When the bulk write reports
every update applied, the call counts what it sent. When it reports fewer (another call changed
some of the files meanwhile: two clients adding the same replicas, a retry racing the request
it repeats), the database does not say which; the call reads the files back and counts what
carries its token, and only that. The call that lost the race finds the other's token there and
counts nothing.

A token stays until the next write of the same kind on that SE of that file replaces it. If that
happens between a call's write and its read-back (the same replica added, removed and added
again within those milliseconds), the call finds fewer files with its token than the database
reported written: it counts those it found and logs the difference (`cairn usage rebuild` mends
it). Readers never show the field (`catalogue.usage.INTERNAL_FIELDS`); it costs a few dozen bytes
per SE a file has ever had a replica on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pymongo import UpdateOne

from kernel.db import Document, bulk_write_chunked, database_errors, read_by_ids

log = logging.getLogger(__name__)
Place = TypeVar("Place", bound=str | None)  # an SE's name, or None for the file itself

REPLICA_WRITERS = "replica_writers"
ADDED = "add"
REMOVED = "remove"
OVERWRITTEN = "overwrite"  # the file's content and replicas replaced at once (`overwrite_files`), under key "~"


def new_token() -> str:
    """A call's token (unique among calls)."""
    return uuid.uuid4().hex


def _key(se: str | None) -> str:
    # An SE name may hold dots, which a field path would split; names never hold '~'.
    return "~" if se is None else se.replace(".", "~")


def writer_field(se: str | None, op: str) -> str:
    """The field an update sets to its call's token when it adds (ADDED) or removes (REMOVED) the
    replica on se, or (se None) overwrites the file (OVERWRITTEN)."""
    return f"{REPLICA_WRITERS}.{_key(se)}.{op}"


def written_by(doc: Mapping[str, Any], se: str | None, op: str, token: str) -> bool:
    """Whether the file record `doc` (read with REPLICA_WRITERS) shows its replica on se last
    added (ADDED) or removed (REMOVED), or (se None) itself last overwritten, by `token`'s call."""
    return bool((doc.get(REPLICA_WRITERS) or {}).get(_key(se), {}).get(op) == token)


def own_writes(docs: Mapping[str, Mapping[str, Any]], attempted: Sequence[tuple[str, Place]], op: str, token: str,
               reported: int) -> list[tuple[str, Place]]:
    """Of the `(lfn, se)` pairs a bulk write attempted (one update per file, `reported` of them
    applied), those the files read back since (`docs`, with REPLICA_WRITERS) show written by
    `token`."""
    mine = [(lfn, se) for lfn, se in attempted if written_by(docs.get(lfn) or {}, se, op, token)]
    found = len({lfn for lfn, _ in mine})
    if found < reported:
        log.warning("%d of the %d files this call wrote (%s) were written again before it read them back: "
                    "the usage counters may be off by those (`cairn usage rebuild` mends it)",
                    reported - found, reported, op)
    return mine


async def write_round(collection: Any, updates: Sequence[UpdateOne], attempted: Sequence[tuple[str, Place]], op: str,
                      token: str, reread: Iterable[str], fields: Mapping[str, Any]
                      ) -> tuple[list[tuple[str, Place]], dict[str, Document] | None]:
    """Apply one round of a bulk write that carries `token` (one guarded update per file, the
    `attempted` pairs in them): the pairs this call wrote, and, when some update missed, the
    files of `reread` as read back (with `fields`) for the next round; None when all applied."""
    with database_errors():
        result = await bulk_write_chunked(collection, list(updates))
    if result.modified_count == len(updates):
        return list(attempted), None
    docs = {doc["_id"]: doc async for doc in read_by_ids(collection, reread, fields)}
    return own_writes(docs, attempted, op, token, result.modified_count), docs
