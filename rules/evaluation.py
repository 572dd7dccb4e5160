"""What the rule evaluator does to one rule it holds the lease of.

`evaluate`: read the DID's files, the rule's locks and the availability of the files, and write
the locks the placement asks for: ok where the replica is available, replicating where a transfer
is needed — submitted right away, the lock remembering when (`submitted`) — or stuck when the
source expression leaves nothing to copy from. Release locks of files that left the DID or exceed
the copies; put ok locks whose replica was removed anyway (`rules.feed`,
`rules.locks.replicas_lost`) back to replicating, and protect ok locks whose available replica
does not carry them (a crash left them uncounted, or the replica was registered again).
The reads come first, each collection once; then per `batch` files one insert of locks, one of
requests, and a few counter updates. Memory for one pass: the rule's files (LFN and size), its
existing locks (five fields each), the files' available SEs and the replicas locked by the rule,
plus one batch of new locks and requests (figures: `bench/rules.py`).

Locks that were already replicating are moved on by `rules.progress`.

`settle`: the rule's state from its lock counters.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.availability import available_ses
from catalogue.directories import now
from catalogue.files import FILES
from catalogue.replica_locks import PROJECTION as LOCKED_REPLICAS
from kernel.db import Document, read_by_ids
from kernel.settings import RuleSettings
from rules import locks as rule_locks
from rules import quotas, rule_admission, rule_claims, rule_contents, store
from rules.placement import place_group, rank
from rules.se_expression import resolve
from rules.transfer_requests import no_source_error, source_for, source_ses, submit_for

log = logging.getLogger("cairn.rules")

LOCK_FIELDS = {"lfn": 1, "se": 1, "state": 1, "counted": 1, "size": 1}
STATS = ("files", "new", "submitted", "released", "unplaced", "reopened", "waiting")


@dataclass
class RulePass:
    """One evaluation of one rule: what it read once up front and what it counts as it goes."""

    db: AsyncDatabase[Document]
    rule: Document
    settings: RuleSettings
    candidates: list[Document]  # the SEs of the rule's expression
    room: dict[str, int | None]  # the account's room per SE (None: no quota)
    sources: set[str] | None  # the SEs of its source expression (None: any)
    existing: dict[str, list[Document]] = field(default_factory=dict)  # its locks by LFN
    replicas: Mapping[str, Collection[str]] = field(default_factory=dict)  # SEs with an available replica
    held: set[tuple[str, str]] = field(default_factory=set)  # (lfn, SE): replicas whose lock_rules name the rule
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATS, 0))


async def evaluate(db: AsyncDatabase[Document], rule: Document, settings: RuleSettings) -> dict[str, int]:
    """(Re)compute a rule's locks from its DID's current content; returns counts of what changed
    (`waiting`: locks left replicating from before, for `progress`)."""
    if not await store.name_its_file(db, rule):
        log.warning("rule %s withdrawn: its file %s is being moved or removed", rule["_id"], rule["did"])
        return dict.fromkeys(STATS, 0)
    ses = await rule_admission.rule_ses(db, rule.get("vo"))
    names = resolve(rule["expression"], ses)
    run = RulePass(db, rule, settings, candidates=[se for se in ses if se["name"] in names],
                   room=await quotas.room_in_vo(db, rule["account"], rule.get("vo"), names),
                   sources=await source_ses(db, rule))
    every = await rule_locks.locks_of(db, rule["_id"], projection=LOCK_FIELDS)
    read = Counter(lock["state"] for lock in every)
    if {s: read.get(s, 0) for s in rule_locks.LOCK_STATES} != rule_locks.counters_of(rule):
        await rule_locks.recount(db, rule["_id"])  # a daemon died between changing locks and counting
    run.existing = rule_locks.by_lfn(every)
    del every
    stats = run.stats
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    async for key, lfn, size in rule_contents.rule_files(db, rule):
        groups[key].append((lfn, size))
        stats["files"] += 1
    seen = {lfn for files in groups.values() for lfn, _ in files}
    run.replicas, run.held = await _replicas(db, seen | set(run.existing), rule["_id"])
    await _check_ok_locks(run)
    stats["waiting"] = sum(lock["state"] == "replicating" for locks in run.existing.values() for lock in locks)
    # Chunks of about `batch` files, whole groups where they fit (a group larger than a chunk
    # is ranked once over all its files and placed chunk by chunk).
    chunk: list[tuple[str, list[tuple[str, int]]]] = []
    size_of_chunk = 0
    for key, files in groups.items():
        if size_of_chunk + len(files) > settings.batch and chunk:
            await _place(run, chunk)
            chunk, size_of_chunk = [], 0
        chunk.append((key, files))
        size_of_chunk += len(files)
    if chunk:
        await _place(run, chunk)
    gone = [lock for lfn, locks in run.existing.items() if lfn not in seen for lock in locks]
    for start in range(0, len(gone), settings.batch):
        stats["released"] += await rule_locks.remove_locks(db, rule, gone[start:start + settings.batch])
    found: dict[str, Any] = {"unplaced": stats["unplaced"], "evaluated": now()}
    if stats["unplaced"]:
        found["error"] = (f"{stats['unplaced']} file(s) found fewer than {rule['copies']} SEs of "
                          f"{rule['expression']!r} that are writable and within quota")
    # No error otherwise: the one it read is left as it is now (written back, it undid a resume's
    # clearing made during the pass).
    await rule_claims.set_fields(db, rule["_id"], found)
    return stats


async def _replicas(db: AsyncDatabase[Document], lfns: set[str], rule_id: str
                    ) -> tuple[dict[str, tuple[str, ...]], set[tuple[str, str]]]:
    """The SEs each file has an available replica on, and the replicas `(lfn, se)` whose
    `lock_rules` name the rule, from one read of the files by `_id` in slices (Index: _id)."""
    available: dict[str, tuple[str, ...]] = {}
    held: set[tuple[str, str]] = set()
    async for doc in read_by_ids(db[FILES], lfns, LOCKED_REPLICAS):
        available[doc["_id"]] = available_ses(doc)
        held.update((doc["_id"], r["se"]) for r in doc.get("replicas", []) if rule_id in (r.get("lock_rules") or ()))
    return available, held


async def _check_ok_locks(run: RulePass) -> None:
    """Ok locks whose replica is no longer available go back to replicating (their count taken
    off the replica first, so a crash in between leaves an uncounted ok lock, found next time);
    ok locks with an available replica that does not carry them are put on it: one a crash left
    uncounted, and one whose replica was registered again (taken off and added back, or replaced
    by an overwrite) before this evaluation, the new record without the rule's lock although the
    lock says `counted` (unprotected, the reaper could free it, and its removal would tell no rule)."""
    db, rule, batch, replicas = run.db, run.rule, run.settings.batch, run.replicas
    ok = [lock for locks in run.existing.values() for lock in locks if lock["state"] == "ok"]
    lost = [lock for lock in ok if lock["se"] not in replicas.get(lock["lfn"], ())]
    uncounted = [{**lock, "counted": False} for lock in ok if lock["se"] in replicas.get(lock["lfn"], ())
                 and (not lock.get("counted") or (lock["lfn"], lock["se"]) not in run.held)]
    for start in range(0, len(lost), batch):
        part = lost[start:start + batch]
        await rule_locks.unprotect(db, part)
        run.stats["reopened"] += await rule_locks.set_state(
            db, rule["_id"], [lock["_id"] for lock in part], "ok", "replicating",
            {"error": "replica removed while locked; copying it again", "counted": False})
        for lock in part:
            lock.update(state="replicating", counted=False)
    if run.stats["reopened"]:
        log.warning("rule %s: %d locked replica(s) were removed; copying them again", rule["_id"],
                    run.stats["reopened"])
    for start in range(0, len(uncounted), batch):
        await rule_locks.protect(db, uncounted[start:start + batch])


async def _place(run: RulePass, groups: list[tuple[str, list[tuple[str, int]]]]) -> None:
    """Place whole groups: rank each group, write locks and their transfers per `batch` files."""
    rule, batch = run.rule, run.settings.batch
    locks: list[Document] = []
    release: list[Document] = []
    for _, files in groups:
        ranked = rank(run.candidates, files, run.existing, run.replicas, rule.get("weight"))
        for start in range(0, len(files), batch):
            placement = place_group(run.candidates, files[start:start + batch], rule["copies"], run.existing,
                                    run.replicas, run.room, rule.get("weight"), ranked)
            locks += [_new_lock(run, lfn, se, size, there) for lfn, se, size, there in placement.new]
            release += placement.release
            run.stats["unplaced"] += len(placement.unplaced)
            if len(locks) >= batch:
                await _write(run, locks)
                locks = []
    await _write(run, locks)
    for start in range(0, len(release), batch):
        run.stats["released"] += await rule_locks.remove_locks(run.db, rule, release[start:start + batch])


def _new_lock(run: RulePass, lfn: str, se: str, size: int, there: bool) -> Document:
    rule = run.rule
    if there:
        return rule_locks.new_lock(rule, lfn, se, size, "ok")
    if source_for(lfn, run.replicas, run.sources) is None:
        return rule_locks.new_lock(rule, lfn, se, size, "stuck", error=no_source_error(rule))
    return rule_locks.new_lock(rule, lfn, se, size, "replicating", submitted=now())


async def _write(run: RulePass, locks: list[Document]) -> None:
    """Insert new locks, then ask for the transfers of the replicating ones (a crash in between
    leaves locks that `progress` finds with no request and asks for)."""
    refused: list[Document] = []
    inserted = await rule_locks.insert_locks(run.db, run.rule, locks, refused=refused)
    run.stats["new"] += len(inserted)
    # Its room was taken meanwhile (another rule of the account): placed again next evaluation.
    run.stats["unplaced"] += len({lock["lfn"] for lock in refused})
    targets = [(lock["lfn"], lock["se"], source_for(lock["lfn"], run.replicas, run.sources) or "")
               for lock in inserted if lock["state"] == "replicating"]
    queued, failed = await submit_for(run.db, run.rule, targets, run.settings)
    run.stats["submitted"] += len(queued)
    for error, ids in failed.items():
        await rule_locks.set_state(run.db, run.rule["_id"], ids, "replicating", "stuck", {"error": error})


def settle(rule: Document) -> dict[str, Any]:
    """The fields that put a rule in the state its counters say (suspended rules stay so)."""
    if rule["state"] == "suspended":
        return {}
    if int(rule.get("locks_stuck", 0)) > 0 or int(rule.get("unplaced", 0)) > 0:
        return {"state": "stuck", "stuck_since": rule.get("stuck_since") or now()}
    if int(rule.get("locks_replicating", 0)) > 0:
        return {"state": "replicating", "stuck_since": None}
    fields: dict[str, Any] = {"state": "ok", "stuck_since": None, "error": None}
    if rule["state"] != "ok":
        fields["ok_since"] = now()
    return fields


def stuck_too_long(rule: Document, suspend_after_s: float) -> bool:
    since = rule.get("stuck_since")
    return isinstance(since, dt.datetime) and now() - since > dt.timedelta(seconds=suspend_after_s)
