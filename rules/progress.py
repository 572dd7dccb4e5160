"""Moving a rule's replicating locks on, for the evaluator holding the rule's lease.

For each replicating lock: its replica is available → ok (the replica is protected); a transfer
to that SE is open (the rule's own, or anyone's: requests are shared by `active_key`) → wait;
the rule's transfer failed for good since the lock last asked → stuck, with the request's error;
otherwise (never asked, done but the replica is gone, cancelled) → a transfer is submitted.

A pass reads the rule's replicating locks, then per `batch` of them (a file's locks together)
reads their files once (`catalogue.replica_locks.replica_states`): the locks whose replica is
available go on it, computed from that same read, and turn ok in one write. Only the locks left
need the rule's requests (one cursor over them); then the files of those with none of the
rule's requests open are read again, because a transfer worker makes the replica available
before it finishes the request: a request read as done has its replica seen by that later read
(the first read alone could see neither, and copy the file again). Only the few locks with no
request open of the rule's are looked up by `active_key`. The rule's counters change once per
pass (`rules.locks.count`). Memory: the replicating locks (`_id`, LFN, SE, `submitted`,
`counted`; a few hundred bytes each), one batch's files, and the availability of the files of
the locks not ok.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.availability import available_on, available_ses
from catalogue.directories import now
from catalogue.replica_locks import replica_states
from kernel.db import Document
from kernel.settings import RuleSettings
from rules import locks as rule_locks
from rules import store
from rules.transfer_requests import no_source_error, open_elsewhere, rule_requests, source_for, source_ses, submit_for

PROJECTION = {"lfn": 1, "se": 1, "submitted": 1, "counted": 1}
Availability = dict[str, tuple[str, ...]]


async def progress(db: AsyncDatabase[Document], rule: Document, settings: RuleSettings) -> int:
    """Move replicating locks on by their replicas and requests; returns how many changed."""
    locks = await rule_locks.locks_of(db, rule["_id"], "replicating", projection=PROJECTION)
    if len(locks) != rule_locks.counters_of(await store.get_rule(db, rule["_id"]))["replicating"]:
        await rule_locks.recount(db, rule["_id"])  # a daemon died between changing locks and counting
    if not locks:
        return 0
    tally: Counter[str] = Counter()
    try:
        changed, waiting, replicas = await _available_to_ok(db, rule, locks, settings, tally)
        if waiting:
            changed += await _follow_requests(db, rule, waiting, replicas, settings, tally)
    finally:
        await rule_locks.count(db, rule["_id"], tally)
    return changed


def _by_file(locks: list[Document], size: int) -> Iterator[list[Document]]:
    """Batches of about `size` locks, sorted by file, never splitting a file's locks."""
    batch: list[Document] = []
    for lock in sorted(locks, key=lambda lock: (lock["lfn"], lock["se"])):
        if len(batch) >= size and lock["lfn"] != batch[-1]["lfn"]:
            yield batch
            batch = []
        batch.append(lock)
    if batch:
        yield batch


async def _available_to_ok(db: AsyncDatabase[Document], rule: Document, locks: list[Document],
                           settings: RuleSettings, tally: Counter[str]) -> tuple[int, list[Document], Availability]:
    """Turn ok the locks whose replica is available, reading each batch's files once; returns how
    many changed, the locks left, and where their files are available."""
    changed = 0
    waiting: list[Document] = []
    replicas: Availability = {}
    async for batch, files in _read_ahead(list(_by_file(locks, settings.batch)),
                                          lambda batch: replica_states(db, {lock["lfn"] for lock in batch})):
        here = {lfn: available_ses(doc) for lfn, doc in files.items()}
        ok = [lock for lock in batch if lock["se"] in here.get(lock["lfn"], ())]
        changed += await _to_ok(db, rule, ok, tally, files)
        for lock in batch:
            if lock["se"] not in here.get(lock["lfn"], ()):
                waiting.append(lock)
                replicas[lock["lfn"]] = here.get(lock["lfn"], ())
    return changed, waiting, replicas


async def _read_ahead(batches: list[list[Document]], read: Callable[[list[Document]], Awaitable[Mapping[str, Document]]]
                      ) -> AsyncIterator[tuple[list[Document], Mapping[str, Document]]]:
    """Each batch with its files, the next batch's files read while this one's locks are written:
    batches never share a file, so a read that overtakes the writes of the batch before it reads
    the same documents as the read after them would."""
    pending: asyncio.Future[Mapping[str, Document]] | None = None
    try:
        for index, batch in enumerate(batches):
            files = await (pending if pending is not None else read(batch))
            pending = asyncio.ensure_future(read(batches[index + 1])) if index + 1 < len(batches) else None
            yield batch, files
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


async def _to_ok(db: AsyncDatabase[Document], rule: Document, ok: list[Document], tally: Counter[str],
                 files: Mapping[str, Document] | None = None) -> int:
    """Put the locks on their replicas, then make them ok and `counted` in one write: a crash in
    between leaves a replicating lock already on its replica, put there again (idempotent) next time.
    A lock whose replica went in between stays replicating (its removal told no rule)."""
    gone = await rule_locks.change_replica_locks(db, [lock for lock in ok if not lock.get("counted")], add=True,
                                                 files=files)
    return await rule_locks.set_state(db, rule["_id"], sorted(lock["_id"] for lock in ok
                                                              if (lock["lfn"], lock["se"]) not in gone),
                                      "replicating", "ok", {"counted": True}, tally=tally)


async def _follow_requests(db: AsyncDatabase[Document], rule: Document, waiting: list[Document],
                           replicas: Availability, settings: RuleSettings, tally: Counter[str]) -> int:
    """The locks whose replica was not available: ok if it is by now, else wait for the rule's
    open request, become stuck by its failure, or ask for a transfer."""
    requests = await rule_requests(db, rule, {(lock["lfn"], lock["se"]) for lock in waiting})
    unsettled = {lock["lfn"] for lock in waiting if (lock["lfn"], lock["se"]) not in requests.open}
    again = await available_on(db, unsettled)  # after the requests: see the module docstring
    replicas.update({lfn: again.get(lfn, ()) for lfn in unsettled})
    sources = await source_ses(db, rule)
    changed = 0
    for start in range(0, len(waiting), settings.batch):
        batch = waiting[start:start + settings.batch]
        ok = [lock for lock in batch if lock["se"] in replicas.get(lock["lfn"], ())]
        changed += await _to_ok(db, rule, ok, tally)
        done = {lock["_id"] for lock in ok}
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
            changed += await rule_locks.set_state(db, rule["_id"], ids, "replicating", "stuck", {"error": error},
                                                  tally=tally)
    return changed
