"""Counters that add what clients claim (sizes) and stay writable past the int64 range.

A `$inc` whose sum leaves the signed 64-bit range is refused by the database, and so is every
later one of that counter: one user claiming sizes near 2^63 stopped every write of a shared
counter. `counter_write` turns an addition to counters read first into a write that never
overflows: a `$inc` guarded against passing the bound (it misses if another write took the
counter near it meanwhile: read again, or leave it to the recount), or, for a sum past the
range, the counters set to the bound and the record marked SATURATED (no longer exact; a
recount sets it again, `saturated_record`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import Int64

from kernel.bounds import INT64_MAX, INT64_MIN
from kernel.db import Document, increment

SATURATED = "saturated"
"""A counter record's mark: a sum passed the int64 range (claimed sizes) and was set to its bound."""


def bounded(value: int) -> int:
    """`value` cut to the int64 range."""
    return max(INT64_MIN, min(INT64_MAX, value))


def counter_write(read: Mapping[str, Any] | None, delta: Mapping[str, int]) -> tuple[Document, Document]:
    """The filter clauses and update adding `delta` to the counters of a record as `read` (None:
    no record yet): a `$inc` guarded against passing the range, or the sums set to the bound,
    marked SATURATED, where one would pass it (or a delta alone cannot be stored)."""
    after = {field: int((read or {}).get(field) or 0) + value for field, value in delta.items()}
    if any(bounded(value) != value for value in (*after.values(), *delta.values())):
        return {}, {"$set": {**{f: Int64(bounded(v)) for f, v in after.items()}, SATURATED: True}}
    guard = {f: {"$not": {"$gt": INT64_MAX - v}} if v > 0 else {"$not": {"$lt": INT64_MIN - v}}
             for f, v in delta.items() if v}
    return guard, increment(delta)


def saturated_record(counts: Mapping[str, int]) -> Document:
    """Recounted `counts` as stored: each cut to the int64 range, the record marked SATURATED
    where one was cut (else its mark taken off, by the caller's `$unset` or replacement)."""
    record: Document = {field: Int64(bounded(value)) for field, value in counts.items()}
    if any(bounded(value) != value for value in counts.values()):
        record[SATURATED] = True
    return record
