"""The administrators' rebuild of quota usage (`account_usage`, `rules.quotas`) from the locks.

The locks move an account's usage as they are written and deleted (`rules.locks`), counted
exactly when calls race each other. What a call cut short leaves behind is mended here:
- an insert killed (or answered 503) after its charge and before its locks were written: the
  account is charged for locks that do not exist, unless the call is retried with the same locks;
- a release killed after its delete and before giving the bytes back: the account is still
  charged for the deleted locks (a retry finds nothing left to release);
- a release that stalled past half of `rules.locks.RELEASE_LEASE` before its delete reached the
  database while another call took its locks over: neither can tell whose they were, and the
  bytes are not given back;
- a failed give-back of the duplicates an insert met (charged twice).
All of these overcharge: the account is refused early, never let past its quota.

Each lock carries its rule's account (`rules.locks.new_lock`; a rule's account never changes), so
one pass over the locks (`account`, `se`, `size`, in keyset pages by `_id`: no cursor stays open,
which on the embedded database would hold writers back) gives files and bytes per account and SE.
Those that differ from what is stored are reported and, unless dry-run, set. Locks written or
released while the rebuild runs can leave new drift behind: run it when the rules are quiet, or
again.
"""

from __future__ import annotations

from typing import Any

from bson import Int64
from pymongo import DeleteOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import STREAM_PAGE, Document, bulk_write_chunked, database_errors, pages_by_id
from rules.locks import LOCKS
from rules.quotas import ACCOUNT_USAGE, key

Held = dict[str, dict[str, Any]]  # {"<account>@<se>": {account, se, files, bytes}}


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
    recounted) and, with `fix`, set it to the recount (a record with nothing locked goes)."""
    truth = await recount(db)
    with database_errors():
        stored = {d["_id"]: d for d in await db[ACCOUNT_USAGE].find({}).to_list()}
    drift: dict[str, Any] = {}
    writes: list[DeleteOne | UpdateOne] = []
    for name in sorted(set(truth) | set(stored)):
        row = truth.get(name) or stored[name]
        want, have = _counts(truth.get(name, {})), _counts(stored.get(name, {}))
        if want == have:
            continue
        drift[name] = {"account": row["account"], "se": row["se"], "stored": have, "recounted": want}
        update = {"$set": {"account": row["account"], "se": row["se"], **{f: Int64(n) for f, n in want.items()}}}
        writes.append(UpdateOne({"_id": name}, update, upsert=True) if name in truth else DeleteOne({"_id": name}))
    if fix and writes:
        await bulk_write_chunked(db[ACCOUNT_USAGE], writes)
    return {"checked": len(set(truth) | set(stored)), "drifted": len(drift), "fixed": fix, "drift": drift}


def _counts(doc: Document) -> dict[str, int]:
    return {"files": int(doc.get("files", 0)), "bytes": int(doc.get("bytes", 0))}
