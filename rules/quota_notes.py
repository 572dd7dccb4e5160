"""Quota charges that a rule daemon killed between two writes cannot lose or double.

An insert of locks charges the account's usage before it writes them, and a release gives their
bytes back around its delete: two documents, no transaction. A daemon killed in between left the
usage off for good (the chaos test found an account charged for a file on both SEs of a rule
whose locks held it once). Each such call now notes itself on every usage record it changes, in
the same update as the change (`notes.<token>`: the rule, the sign, the locks with their sizes):
- an insert (`rules.locks.insert_locks`) charges with its note, writes its locks carrying its
  token (`charged_by`), then per record gives back the locks that existed already and takes its
  note off, in one update guarded by the note's presence;
- a release (`rules.locks.remove_locks`; its locks marked and taken off their replicas) gives
  their bytes back with its note, deletes them by its mark, and takes the note off (guarded).
A call killed in between leaves its note. Only the holder of the rule's lease changes the rule's
locks, and each holder settles the rule's notes before its work (`settle_left`, called by
`rules.daemon.RuleDaemon`; once a minute the evaluator also takes the rules with notes left that
no daemon would take soon: `settle_unheld`). Of an insert, the named locks that are there
carrying its token stay charged and the others are given back; of a release, the named locks
still there are deleted (their bytes were given back, their replicas unprotected) and uncounted
on the rule. Each note is settled by one update guarded by its presence, so it is counted once
whoever settles it; a call that only stalled and resumes after its successor settled for it
finds its note gone and its locks deleted, and counts nothing more.

What is left, for `cairn quota rebuild`: a stall longer than the rule's lease between a call's
lease check (`kernel.lease.check_held`, just before its charge and its insert) and the write;
a rebuild that sets a record while a call runs (it drops the record's notes, as
`rules.quota_rebuild` describes). Cost: one more write per SE and call, and one read of the
account's usage records per rule a daemon takes.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import now
from kernel.db import Document, database_errors, read_by_ids
from kernel.documents import aware
from kernel.marks import by_ids
from rules import locks as rule_locks
from rules import quotas, rule_claims
from rules.triggers import RULES


async def settle_left(db: AsyncDatabase[Document], rule: Document) -> int:
    """Settle the notes a call on `rule` left on its account's usage records (the caller holds the
    rule's lease: no other call on it runs); returns how many there were. One read when none."""
    with database_errors():
        records = await db[quotas.ACCOUNT_USAGE].find({"account": rule["account"]},
                                                      {"se": 1, quotas.NOTES: 1}).to_list()
    left = [(record["se"], token, note) for record in records
            for token, note in (record.get(quotas.NOTES) or {}).items() if note.get("rule") == rule["_id"]]
    for se, token, note in left:
        await _settle(db, rule, se, token, note)
    return len(left)


async def _settle(db: AsyncDatabase[Document], rule: Document, se: str, token: str, note: Document) -> None:
    named = {str(lock_id): int(size) for lock_id, size in zip(note["locks"], note["sizes"], strict=True)}
    if int(note.get("sign", 0)) > 0:
        kept = {lock["_id"] async for lock in read_by_ids(db[rule_locks.LOCKS], named, {"_id": 1},
                                                          flt={rule_locks.CHARGED_BY: token})}
        back = [size for lock_id, size in named.items() if lock_id not in kept]
        await quotas.charge(db, rule["account"], {se: (-len(back), -sum(back))}, settles=token)
        return
    left = [lock async for lock in read_by_ids(db[rule_locks.LOCKS], named, {"state": 1})]
    ids = [lock["_id"] for lock in left]
    with database_errors():
        for flt in by_ids(ids):
            await db[rule_locks.LOCKS].delete_many(flt)
    tally: Counter[str] = Counter({state: -n for state, n in Counter(lock["state"] for lock in left).items()})
    await rule_locks.count(db, rule["_id"], tally)
    await quotas.charge(db, rule["account"], {se: (0, 0)}, settles=token)



async def settle_unheld(db: AsyncDatabase[Document], worker: str, *, lease_s: float) -> int:
    """Settle the notes older than a lease whose rule no daemon holds and none may take again
    soon (a rule suspended after failed passes, or whose failed pass backs off): each such rule
    is taken under its lease for that alone; a note whose rule is gone is settled as is. Returns
    how many notes were settled. One read of the usage records (the evaluator's, once a minute)."""
    cutoff = now() - dt.timedelta(seconds=lease_s)
    with database_errors():
        records = await db[quotas.ACCOUNT_USAGE].find({quotas.NOTES: {"$exists": True}},
                                                      {"account": 1, quotas.NOTES: 1}).to_list()
    stale = {note["rule"]: record["account"] for record in records
             for note in (record.get(quotas.NOTES) or {}).values() if aware(note["at"]) < cutoff}
    settled = 0
    for rule_id, account in sorted(stale.items()):
        rule = await rule_claims.claim(db, worker, {"_id": rule_id}, lease_s=lease_s)
        if rule is not None:
            try:
                settled += await settle_left(db, rule)
            finally:
                await rule_claims.release(db, rule, worker, {})
        elif await db[RULES].find_one({"_id": rule_id}, {"_id": 1}) is None:
            settled += await settle_left(db, {"_id": rule_id, "account": account})
    return settled
