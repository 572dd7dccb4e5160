"""Overwrites' counts that a server killed between its write and its count cannot lose or
double (`catalogue.usage_claims`).

An overwrite (`catalogue.replicas.overwrite_files`: a file's size and replicas replaced at
once) moves each file's old size and replicas out of the usage counters and the new ones in: a
server killed between its write and its count left the counters at the old sizes for good. Now
each round of it claims its token PENDING with what it would move per file (`planned`), and
notes itself on the records those may change, before it writes; the write carries the token
(`replica_writers.OVERWRITTEN`); then it settles what it wrote. The transfer workers' sweep
(`settle_stale`) counts for a round left PENDING the files whose overwrite writer is still its
token, and settles it: once, whoever comes first.

What is left, for `cairn usage rebuild`: a file overwritten again (its token replaced), removed
or moved between a killed round's write and the sweep is not counted for that round. A rebuild
settles every PENDING overwrite, counting nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage_claims
from catalogue.collection_names import FILES
from catalogue.replica_writers import OVERWRITTEN, REPLICA_WRITERS, written_by
from catalogue.usage import COUNTING, KEYS, Usage
from kernel.db import Document, database_errors, read_by_ids

KIND = "overwrite"


def planned(lfn: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> Document:
    """What overwriting `lfn` (as read: `before`) with `after` moves: its size and replicas' SEs."""
    old = int(before.get("size") or 0)
    return {"lfn": lfn, "old": old, "new": int(after.get("size") or old),
            "from": [r["se"] for r in before.get("replicas") or []],
            "to": [r["se"] for r in after.get("replicas") or before.get("replicas") or []]}


def totals(plans: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """What the overwrites `plans` (`planned`) move on the usage records."""
    usage = Usage()
    for plan in plans:
        usage.file(plan["lfn"], plan["old"], -1)
        usage.file(plan["lfn"], plan["new"], +1)
        for se in plan["from"]:
            usage.replica(se, plan["old"], -1)
        for se in plan["to"]:
            usage.replica(se, plan["new"], +1)
    return usage.totals()


def noted_keys(plans: Iterable[Mapping[str, Any]]) -> list[str]:
    """The usage records some of the overwrites `plans` would change (whichever are written)."""
    return sorted({key for plan in plans for key in totals([plan])})


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = usage_claims.STALE_S) -> int:
    """Finish the counts of overwrite rounds that died (or stalled) between their intent and
    their count: the claims PENDING for longer than `older_than_s`, each counted from its files'
    overwrite writer (one `_id` read) and settled. Returns the rounds settled."""
    stale = await usage_claims.stale(db, older_than_s, KIND)
    for claim in stale:
        plans = claim.get(COUNTING) or []
        with database_errors():
            docs = {d["_id"]: d async for d in read_by_ids(db[FILES], [p["lfn"] for p in plans], {REPLICA_WRITERS: 1})}
        mine = [p for p in plans if written_by(docs.get(p["lfn"]) or {}, None, OVERWRITTEN, claim["_id"])]
        await usage_claims.settle(db, claim["_id"], claim.get(KEYS) or [], totals(mine), keep=False)
    return len(stale)
