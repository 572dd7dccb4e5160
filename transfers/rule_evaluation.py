"""What the rule evaluator does to one rule it holds the lease of.

`evaluate`: read the DID's files group by group, the rule's locks and the files' replicas, and
write the locks the placement asks for (ok where the replica is available, replicating where a
transfer is needed), release locks of files that left the DID or exceed the copies. Round trips
per batch of files: one read of replicas, one insert of locks, a few counter updates.

`progress`: for the replicating locks, look at their replicas and transfer requests: available
→ ok (the replica is protected); an open transfer to that SE (anyone's: requests are shared by
`active_key`) → wait; this rule's transfer failed for good since the lock last submitted one →
stuck, with the request's error; otherwise (never submitted, done but the replica is gone,
cancelled) → a transfer is submitted (requester `rule:<id>`). Requests are found by key and
requester, not stored on each lock, so a batch costs a handful of round trips.

`settle`: the rule's state from its lock counters.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import quotas, rule_locks, rules
from catalogue.directories import now
from catalogue.files import FILES
from catalogue.rule_triggers import RULES
from catalogue.se_expression import resolve
from kernel.db import Document, database_errors
from kernel.settings import RuleSettings
from transfers import requests as rq
from transfers.rule_placement import place_group, rank

log = logging.getLogger("cairn.rules")


def requester(rule: Document) -> str:
    return f"rule:{rule['_id']}"


async def available_on(db: AsyncDatabase[Document], lfns: list[str]) -> dict[str, set[str]]:
    """The SEs each file has an available replica on (one `_id $in` read)."""
    with database_errors():
        docs = await db[FILES].find({"_id": {"$in": lfns}}, {"replicas.se": 1, "replicas.status": 1}).to_list()
    return {d["_id"]: {r["se"] for r in d.get("replicas", []) if r.get("status") == "available"} for d in docs}


async def evaluate(db: AsyncDatabase[Document], rule: Document, settings: RuleSettings) -> dict[str, int]:
    """(Re)compute a rule's locks from its DID's current content; returns counts of what changed."""
    ses = await rules.all_ses(db)
    names = resolve(rule["expression"], ses)
    candidates = [se for se in ses if se["name"] in names]
    room = await quotas.room(db, rule["account"], names)
    existing = rule_locks.by_lfn([lock async for page in rule_locks.locks_of(db, rule["_id"]) for lock in page])
    stats = {"files": 0, "new": 0, "released": 0, "unplaced": 0}
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    async for key, lfn, size in rules.rule_files(db, rule):
        groups[key].append((lfn, size))
        stats["files"] += 1
    seen = {lfn for files in groups.values() for lfn, _ in files}
    # Chunks of about `batch` files, whole groups where they fit (a group larger than a chunk
    # is ranked once over all its files and placed chunk by chunk).
    chunk: list[tuple[str, list[tuple[str, int]]]] = []
    size_of_chunk = 0
    for key, files in groups.items():
        if size_of_chunk + len(files) > settings.batch and chunk:
            await _place(db, rule, candidates, chunk, existing, room, settings, stats)
            chunk, size_of_chunk = [], 0
        chunk.append((key, files))
        size_of_chunk += len(files)
    if chunk:
        await _place(db, rule, candidates, chunk, existing, room, settings, stats)
    gone = [lock for lfn, locks in existing.items() if lfn not in seen for lock in locks]
    for start in range(0, len(gone), settings.batch):
        await rule_locks.remove_locks(db, rule, gone[start:start + settings.batch])
    stats["released"] += len(gone)
    with database_errors():
        await db[RULES].update_one({"_id": rule["_id"]}, {"$set": {
            "unplaced": stats["unplaced"], "evaluated": now(),
            "error": (f"{stats['unplaced']} file(s) found fewer than {rule['copies']} SEs of {rule['expression']!r} "
                      "that are writable and within quota") if stats["unplaced"] else rule.get("error")}})
    return stats


async def _place(db: AsyncDatabase[Document], rule: Document, candidates: list[Document],
                 groups: list[tuple[str, list[tuple[str, int]]]], existing: dict[str, list[Document]],
                 room: dict[str, int | None], settings: RuleSettings, stats: dict[str, int]) -> None:
    """Place whole groups: read their replicas, rank each group, write locks per `batch` files."""
    lfns = [lfn for _, files in groups for lfn, _ in files]
    replicas: dict[str, set[str]] = {}
    for start in range(0, len(lfns), settings.batch):
        replicas.update(await available_on(db, lfns[start:start + settings.batch]))
    locks: list[Document] = []
    release: list[Document] = []
    for _, files in groups:
        ranked = rank(candidates, files, existing, replicas, rule.get("weight"))
        for start in range(0, len(files), settings.batch):
            placement = place_group(candidates, files[start:start + settings.batch], rule["copies"], existing,
                                    replicas, room, rule.get("weight"), ranked)
            locks += [rule_locks.new_lock(rule, lfn, se, size, "ok" if there else "replicating")
                      for lfn, se, size, there in placement.new]
            release += placement.release
            stats["unplaced"] += len(placement.unplaced)
            if len(locks) >= settings.batch:
                stats["new"] += len(await rule_locks.insert_locks(db, rule, locks))
                locks = []
    stats["new"] += len(await rule_locks.insert_locks(db, rule, locks))
    for start in range(0, len(release), settings.batch):
        await rule_locks.remove_locks(db, rule, release[start:start + settings.batch])
    stats["released"] += len(release)


async def progress(db: AsyncDatabase[Document], rule: Document, settings: RuleSettings) -> int:
    """Move replicating locks on by their replicas and requests; returns how many changed."""
    changed = 0
    async for page in rule_locks.locks_of(db, rule["_id"], "replicating", batch=settings.batch):
        changed += await _progress_batch(db, rule, page, settings)
    return changed


async def _progress_batch(db: AsyncDatabase[Document], rule: Document, locks: list[Document],
                          settings: RuleSettings) -> int:
    lfns = sorted({lock["lfn"] for lock in locks})
    replicas = await available_on(db, lfns)
    waiting = [lock for lock in locks if lock["se"] not in replicas.get(lock["lfn"], set())]
    keys = [rq.active_key("transfer", lock["lfn"], lock["se"]) for lock in waiting]
    with database_errors():
        # Index: requests_active_key — open transfers to these destinations, whoever asked.
        open_keys = {r["active_key"] for r in await db[rq.REQUESTS].find(
            {"active_key": {"$in": keys}}, {"active_key": 1}).to_list()} if keys else set()
        # Index: requests_by_requester — this rule's transfers that failed for good.
        failed = await db[rq.REQUESTS].find(
            {"requester": requester(rule), "state": "failed", "lfn": {"$in": [lock["lfn"] for lock in waiting]}},
            {"lfn": 1, "dest_se": 1, "created": 1, "last_error": 1}).to_list() if waiting else []
    failures = {(r["lfn"], r["dest_se"]): r for r in failed}
    ok = [lock for lock in locks if lock["se"] in replicas.get(lock["lfn"], set())]
    stuck: dict[str, list[str]] = defaultdict(list)
    submit: list[Document] = []
    for lock, key in zip(waiting, keys, strict=True):
        if key in open_keys:
            continue
        failure = failures.get((lock["lfn"], lock["se"]))
        submitted = lock.get("submitted")
        if failure is not None and submitted is not None and failure["created"] >= submitted:
            stuck[f"transfer to {lock['se']} failed: {failure.get('last_error')}"].append(lock["_id"])
        else:
            submit.append(lock)
    changed = await rule_locks.set_state(db, rule["_id"], [lock["_id"] for lock in ok], "replicating", "ok")
    await rule_locks.protect(db, ok)
    for error, ids in stuck.items():
        changed += await rule_locks.set_state(db, rule["_id"], ids, "replicating", "stuck", {"error": error})
    changed += await _submit(db, rule, submit, replicas, settings)
    return changed


async def _source_ses(db: AsyncDatabase[Document], rule: Document) -> set[str] | None:
    if not rule.get("source_expression"):
        return None
    return resolve(rule["source_expression"], await rules.all_ses(db))


async def _submit(db: AsyncDatabase[Document], rule: Document, locks: list[Document],
                  replicas: Mapping[str, set[str]], settings: RuleSettings) -> int:
    """Ask for the transfers the locks wait for (one submission per destination SE); the locks
    remember when (`submitted`), so only a failure after that makes them stuck."""
    if not locks:
        return 0
    at = now()
    sources = await _source_ses(db, rule)
    by_dest: dict[str, list[dict[str, Any]]] = defaultdict(list)
    no_source: list[str] = []
    for lock in locks:
        item: dict[str, Any] = {"lfn": lock["lfn"], "dest_se": lock["se"]}
        if sources is not None:
            allowed = sorted(replicas.get(lock["lfn"], set()) & sources)
            if not allowed:
                no_source.append(lock["_id"])
                continue
            item["source_se"] = allowed[0]
        by_dest[lock["se"]].append(item)
    changed = await rule_locks.set_state(db, rule["_id"], no_source, "replicating", "stuck", {
        "error": f"no available replica on the source expression {rule.get('source_expression')!r}"})
    queued: list[str] = []
    failed: dict[str, list[str]] = defaultdict(list)
    for dest, items in by_dest.items():
        result = await rq.submit(db, "transfer", items, requester=requester(rule), activity=rule["activity"],
                                 priority=int(rule.get("priority", 3)), max_attempts=settings.transfer_attempts)
        for item in items:
            lid = rule_locks.lock_id(rule["_id"], item["lfn"], dest)
            if item["lfn"] in result["successful"]:
                queued.append(lid)
            else:
                failed[f"transfer not queued: {result['failed'].get(item['lfn'])}"].append(lid)
    await rule_locks.mark(db, queued, {"submitted": at})
    for error, ids in failed.items():
        changed += await rule_locks.set_state(db, rule["_id"], ids, "replicating", "stuck", {"error": error})
    return changed + len(queued)


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
