"""Moving a rule's replicating locks on, for the evaluator holding the rule's lease.

For each replicating lock: its replica is available → ok (the replica is protected); a transfer
to that SE is open (the rule's own, or anyone's: requests are shared by `active_key`) → wait;
the rule's transfer failed for good since the lock last asked → stuck, with the request's error;
otherwise (never asked, done but the replica is gone, cancelled) → a transfer is submitted.

Reads before writes, each collection once per pass: the rule's replicating locks, the rule's own
requests, the availability of their files (`catalogue.availability`); then writes
per `batch` locks. Only the few locks with none of the rule's requests open are looked up by
`active_key`. Memory: the replicating locks (`_id`, LFN, SE, `submitted`, `counted`; a few
hundred bytes each) and the availability of their files, for one pass.
"""

from __future__ import annotations

from collections import defaultdict

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.availability import available_on
from catalogue.directories import now
from kernel.db import Document
from kernel.settings import RuleSettings
from rules import locks as rule_locks
from rules import store
from rules.transfer_requests import no_source_error, open_elsewhere, rule_requests, source_for, source_ses, submit_for

PROJECTION = {"lfn": 1, "se": 1, "submitted": 1, "counted": 1}


async def progress(db: AsyncDatabase[Document], rule: Document, settings: RuleSettings) -> int:
    """Move replicating locks on by their replicas and requests; returns how many changed."""
    locks = await rule_locks.locks_of(db, rule["_id"], "replicating", projection=PROJECTION)
    if len(locks) != rule_locks.counters_of(await store.get_rule(db, rule["_id"]))["replicating"]:
        await rule_locks.recount(db, rule["_id"])  # a daemon died between changing locks and counting
    if not locks:
        return 0
    # Requests before replicas: a transfer worker makes the replica available before it finishes
    # the request, so a request read as done has its replica seen by the later read (the other
    # order could see neither, and copy the file again).
    requests = await rule_requests(db, rule, {(lock["lfn"], lock["se"]) for lock in locks})
    replicas = await available_on(db, {lock["lfn"] for lock in locks})
    sources = await source_ses(db, rule)
    changed = 0
    for start in range(0, len(locks), settings.batch):
        batch = locks[start:start + settings.batch]
        ok = [lock for lock in batch if lock["se"] in replicas.get(lock["lfn"], ())]
        done = {lock["_id"] for lock in ok}
        # On the replicas first, then ok and `counted` in one write: a crash in between leaves
        # a replicating lock already on its replica, put there again (idempotent) next time.
        await rule_locks.change_replica_locks(db, [lock for lock in ok if not lock.get("counted")], add=True)
        changed += await rule_locks.set_state(db, rule["_id"], sorted(done), "replicating", "ok", {"counted": True})
        stuck: dict[str, list[str]] = defaultdict(list)
        ask: list[Document] = []
        for lock in batch:
            target = (lock["lfn"], lock["se"])
            if lock["_id"] in done or target in requests.open:
                continue
            failure = requests.failed.get(target)
            submitted = lock.get("submitted")
            if failure is not None and submitted is not None and failure["created"] >= submitted:
                stuck[f"transfer to {lock['se']} failed: {failure.get('last_error')}"].append(lock["_id"])
            else:
                ask.append(lock)
        shared = await open_elsewhere(db, [(lock["lfn"], lock["se"]) for lock in ask])
        ask = [lock for lock in ask if (lock["lfn"], lock["se"]) not in shared]
        targets = []
        for lock in ask:
            source = source_for(lock["lfn"], replicas, sources)
            if source is None:
                stuck[no_source_error(rule)].append(lock["_id"])
            else:
                targets.append((lock["lfn"], lock["se"], source))
        at = now()
        queued, failed = await submit_for(db, rule, targets, settings)
        await rule_locks.mark(db, queued, {"submitted": at})
        changed += len(queued)
        for error, ids in [*stuck.items(), *failed.items()]:
            changed += await rule_locks.set_state(db, rule["_id"], ids, "replicating", "stuck", {"error": error})
    return changed
