"""File removals' counts that a server killed between its delete and its count cannot lose or
double (`catalogue.usage_claims`).

A file removal (`catalogue.file_removal.remove_records`) deletes the records it marked, then
takes them off the usage counters of their directories and SEs: a server killed in between left
the counters holding files that were gone, for good. Now, once it has marked and read its
records, the call claims its mark's token PENDING with each record as read (`planned`: LFN,
GUID, size, replicas' SEs) and notes itself on the records those may change; after its deletes
it settles what it removed. The transfer workers' sweep (`settle_stale`) counts for a call left
PENDING the planned records whose GUID no record holds any more (index files_by_guid), and
settles it. By then the call's deletes are over: it deletes only within half its marks' lease
(`kernel.marks.Mark.delete`, REMOVAL_LEASE / 2, the sweep's default wait), and until the lease
ends no other call moves or removes what it marked.

What is left, for `cairn usage rebuild`: a sweep reaching the claim after the marks' lease
ended and another removal took a record over (counted off twice); a record whose replicas
changed between the read and the delete (counted off by its replicas as read); a GUID
registered again within the sweep's wait (not counted off).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage_claims
from catalogue.collection_names import FILES
from catalogue.usage import COUNTING, KEYS, Usage, add_to_counters
from kernel.db import Document, database_errors, read_by_ids

KIND = "removal"


def planned(doc: Mapping[str, Any]) -> Document:
    """What removing the record `doc` (as read) takes off: its size and replicas' SEs."""
    return {"lfn": doc["_id"], "guid": doc.get("guid"), "size": int(doc.get("size") or 0),
            "ses": [r["se"] for r in doc.get("replicas") or []]}


def totals(plans: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """What removing the records `plans` (`planned`) takes off the usage records."""
    usage = Usage()
    for plan in plans:
        usage.file(plan["lfn"], plan["size"], -1)
        for se in plan["ses"]:
            usage.replica(se, plan["size"], -1)
    return usage.totals()


async def intend(db: AsyncDatabase[Document], token: str, records: Mapping[str, Document]) -> list[str]:
    """Before deleting `records` (as read, with guid, size and replicas.se): claim `token` with
    them and note it on the usage records they may change; returns those."""
    plans = [planned(doc) for doc in records.values()]
    keys = sorted(totals(plans))
    await usage_claims.intend(db, token, keys, kind=KIND, counting=plans)
    return keys


async def settle(db: AsyncDatabase[Document], token: str, keys: Sequence[str], removed: Iterable[Document]) -> None:
    """After the deletes: take what the call `removed` off, each noted record once; a record it
    did not note (a replica on another SE by the time it deleted) directly, as nobody else
    counts it."""
    deltas = totals(planned(doc) for doc in removed)
    noted = set(keys)
    await usage_claims.settle(db, token, keys, {k: v for k, v in deltas.items() if k in noted}, keep=False)
    if rest := {k: v for k, v in deltas.items() if k not in noted}:
        await add_to_counters(db, rest)


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = usage_claims.STALE_S) -> int:
    """Finish the counts of removals that died (or stalled) between their intent and their
    count: the claims PENDING for longer than `older_than_s`, each counting off the planned
    records whose GUID (or, without one, LFN) no record holds. Returns the calls settled."""
    stale = await usage_claims.stale(db, older_than_s, KIND)
    for claim in stale:
        plans = claim.get(COUNTING) or []
        with database_errors():
            guids = {d["guid"] for d in await db[FILES].find(  # files_by_guid
                {"guid": {"$in": [p["guid"] for p in plans if p.get("guid")]}}, {"guid": 1}).to_list()}
            lfns = {d["_id"] async for d in read_by_ids(db[FILES], [p["lfn"] for p in plans if not p.get("guid")],
                                                       {"_id": 1})}
        gone = [p for p in plans if (p["guid"] not in guids if p.get("guid") else p["lfn"] not in lfns)]
        await usage_claims.settle(db, claim["_id"], claim.get(KEYS) or [], totals(gone), keep=False)
    return len(stale)
