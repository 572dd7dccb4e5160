"""Register calls' counts that a server killed between its insert and its count cannot lose or
double (`catalogue.usage_claims`).

A register call (`catalogue.files.register_files`) inserts its file records, then adds them to
the usage counters of every directory above them and of their replicas' SEs: a server killed in
between left those counters short for good. Now it claims its token PENDING and notes itself on
every record its batch may change before the insert (`noted_keys`), and settles after giving
records up (`registered_totals`). A successor counts for a PENDING call from the records that
carry its token (`registered_in`, index files_by_registered_in), those not withdrawn, with their
first replicas: the transfer workers' sweep (`settle_stale`), and a removal, a move or a retry
meeting its records, after `registration_settling` waited a moment for the call itself
(`take_over_calls`). A rebuild counts the records it reads and settles the PENDING calls it
counted, counting nothing more (`catalogue.usage.apply_recount`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import usage_claims
from catalogue.collection_names import FILES
from catalogue.lfn import ancestors
from catalogue.usage import (
    KEYS,
    PENDING,
    REGISTERED_IN,
    USAGE_CLAIMS,
    WITHDRAWN,
    Usage,
    claim_calls,
    directory_key,
    se_key,
)
from kernel.db import Document, database_errors, iterate, read_by_ids


def noted_keys(lfns: Iterable[str], ses: Iterable[str]) -> list[str]:
    """The usage records a call registering `lfns` with replicas on `ses` may change."""
    return sorted({directory_key(d) for lfn in lfns for d in ancestors(lfn)} | {se_key(se) for se in ses})


def registered_totals(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """What file records registered (with the replicas given) add to the usage records."""
    usage = Usage()
    for doc in docs:
        size = int(doc.get("size", 0))
        usage.file(doc["_id"], size, +1)
        for replica in doc.get("replicas", []):
            usage.replica(replica["se"], size, +1)
    return usage.totals()


async def settle_pending(db: AsyncDatabase[Document], call: str, keys: Sequence[str]) -> None:
    """Settle a PENDING call for it: count the records it inserted and did not withdraw, with
    their first replicas, as they are now (index files_by_registered_in)."""
    await usage_claims.settle(db, call, keys, (await _kept_by(db, [call])).totals())


async def _kept_by(db: AsyncDatabase[Document], calls: Sequence[str]) -> Usage:
    """What the records `calls` inserted and did not withdraw add, with their first replicas."""
    usage = Usage()
    # Not the records a call withdrew (`directory_moves.give_up_registered`): it deletes them uncounted,
    # after waiting (up to PASS_WAIT) for a move, longer than a registration waits for it to settle.
    cursor = db[FILES].find({REGISTERED_IN: {"$in": sorted(calls)}, WITHDRAWN: {"$exists": False}},
                            {"size": 1, "created": 1, "replicas.se": 1, "replicas.created": 1})
    async for doc in iterate(cursor.batch_size(5000)):
        usage.file(doc["_id"], int(doc.get("size", 0)), +1)
        for replica in _first_replicas(doc):
            usage.replica(replica["se"], int(doc.get("size", 0)), +1)
    return usage


def _first_replicas(doc: Document) -> list[Document]:
    """The replicas a file was registered with (made just before the record, so not later)."""
    created = doc.get("created")
    return [r for r in doc.get("replicas", []) if created is None or r.get("created", created) <= created]


async def settle_stale(db: AsyncDatabase[Document], older_than_s: float = usage_claims.STALE_S) -> int:
    """Finish the counts of register calls that died (or stalled) between their intent and their
    count: the claims PENDING for longer than `older_than_s`, each settled from its records.
    Returns the calls settled."""
    stale = await usage_claims.stale(db, older_than_s, None)
    for claim in stale:
        await settle_pending(db, claim["_id"], claim.get(KEYS) or [])
    return len(stale)


async def take_over_calls(db: AsyncDatabase[Document], docs: Iterable[Document]) -> None:
    """Make sure the register calls named by `docs` (read with REGISTERED_IN) are counted before
    their records change: settle each PENDING one (`settle_pending`), and claim and count each
    that never claimed (records written before calls claimed first, or by a rebuild's claims
    missing). One `_id $in` read when all are counted."""
    calls = sorted({str(d[REGISTERED_IN]) for d in docs if d.get(REGISTERED_IN)})
    if not calls:
        return
    with database_errors():
        claims = {c["_id"]: c async for c in read_by_ids(db[USAGE_CLAIMS], calls, {PENDING: 1, KEYS: 1})}
    for call, claim in sorted(claims.items()):
        if PENDING in claim:
            await settle_pending(db, call, claim.get(KEYS) or [])
    if won := await claim_calls(db, [call for call in calls if call not in claims]):
        await (await _kept_by(db, sorted(won))).apply(db)
