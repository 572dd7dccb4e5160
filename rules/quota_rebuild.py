"""The administrators' rebuild of quota usage (`account_usage`, `rules.quotas`) from the locks.

The locks move an account's usage as they are written and deleted (`rules.locks`), counted
exactly when calls race each other, and a call cut short (killed, or answered 503) between its
charge and its locks' write, or between its give-back and its delete, leaves a note that the
rule's next lease holder settles (`rules.quota_notes`). What is left to mend here:
- a call that stalled longer than its rule's lease between its lease check and its write;
- a call whose note a rebuild dropped (below) while it ran.

Each lock carries its rule's account (`rules.locks.new_lock`; a rule's account never changes), so
one pass over the locks (`account`, `se`, `size`, in keyset pages by `_id`: no cursor stays open,
which on the embedded database would hold writers back) gives files and bytes per account and SE.
Those that differ from what is stored are reported and, unless dry-run, set (a record set
loses its notes: what the recount read is what is charged; a note's call settling after it
changes nothing more).

The stored usage is read before the locks are counted, and a record is set (or removed) only
where it still holds what was read: a charge or give-back that lands while the locks are counted
(an insert charges before it writes its locks, a release gives back before its delete) moves the
record, which is then left alone and reported under `moved` (run the rebuild again). Without
that, a lock inserted behind the count's pages with its charge already stored would be set back
out of the usage for good, letting the account past its quota. What is left: a charge stored
just before the rebuild began whose locks land after the count passed them, or a give-back
stored just before it whose delete lands after the count read its locks (milliseconds each,
between a call's two writes).

Sizes are what clients claim: a recount past the int64 range is set at its bound and marked
SATURATED (`kernel.counters.saturated_record`), and the mark taken off once a recount is within it.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.counters import SATURATED, bounded, saturated_record
from kernel.db import STREAM_PAGE, Document, database_errors, pages_by_id
from kernel.recount import set_if_unmoved
from rules.locks import LOCKS
from rules.quotas import ACCOUNT_USAGE, key

Held = dict[str, dict[str, Any]]  # {"<account>@<se>": {account, se, files, bytes}}
FIELDS = ("files", "bytes")


async def recount(db: AsyncDatabase[Document]) -> Held:
    """Files and bytes the locks hold per account and SE, from one pass over them."""
    held: Held = {}
    async for lock in pages_by_id(db[LOCKS], {}, {"account": 1, "se": 1, "size": 1}, page=STREAM_PAGE):
        name = key(lock["account"], lock["se"])
        row = held.setdefault(name, {"account": lock["account"], "se": lock["se"], "files": 0, "bytes": 0})
        row["files"] += 1
        row["bytes"] += int(lock.get("size", 0))
    return held


async def rebuild(db: AsyncDatabase[Document], *, fix: bool = True) -> dict[str, Any]:
    """Recount account usage from the locks, report each (account, SE) that drifted (stored vs.
    recounted) and, with `fix`, set it to the recount where it did not move meanwhile (a record
    with nothing locked goes)."""
    held = await stored(db)
    return await apply(db, held, await recount(db), fix=fix)


async def stored(db: AsyncDatabase[Document]) -> dict[str, Document]:
    """The usage records as they are now, by `_id`."""
    with database_errors():
        return {d["_id"]: d for d in await db[ACCOUNT_USAGE].find({}).to_list()}


async def apply(db: AsyncDatabase[Document], held: dict[str, Document], truth: Held, *, fix: bool) -> dict[str, Any]:
    """Report what differs between the records read before the count (`held`) and the count, and
    with `fix` set each record that still holds what was read."""
    drift: dict[str, Any] = {}
    moved: list[str] = []
    for name in sorted(set(truth) | set(held)):
        row = truth.get(name) or held[name]
        want, have = _counts(truth.get(name, {})), _counts(held.get(name, {}))
        record = _record(row, want) if name in truth else None  # nothing locked: the record goes
        if {f: bounded(n) for f, n in want.items()} == have and (
                bool(held.get(name, {}).get(SATURATED)) == (record is not None and SATURATED in record)):
            continue
        drift[name] = {"account": row["account"], "se": row["se"], "stored": have, "recounted": want}
        if fix and not await set_if_unmoved(db[ACCOUNT_USAGE], name, held.get(name), record, fields=FIELDS,
                                            replace=True):
            moved.append(name)
    return {"checked": len(set(truth) | set(held)), "drifted": len(drift), "fixed": fix, "moved": moved,
            "drift": drift}


def _record(row: Document, counts: dict[str, int]) -> Document:
    """The whole record of a recount (replacing the stored one, its SATURATED mark with it)."""
    return {"account": row["account"], "se": row["se"], **saturated_record(counts)}


def _counts(doc: Document) -> dict[str, int]:
    return {f: int(doc.get(f, 0)) for f in FIELDS}
