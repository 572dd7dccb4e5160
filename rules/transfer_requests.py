"""The transfer requests a rule asks for: who asks (`rule:<id>`), submitting them for locks, and
reading back what became of them.

Requests are found by requester and by `active_key`, not stored on each lock: a lock records
only when it last asked (`submitted`), so a failure of an older request does not make it stuck.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, database_errors, find_by_values
from kernel.settings import RuleSettings
from rules import rule_admission
from rules.locks import lock_id
from rules.se_expression import resolve
from transfers import queueing
from transfers import requests as rq

Target = tuple[str, str]  # (lfn, SE)


def requester(rule: Document) -> str:
    return f"rule:{rule['_id']}"


async def source_ses(db: AsyncDatabase[Document], rule: Document) -> set[str] | None:
    """The SEs a rule may copy from (None: any)."""
    if not rule.get("source_expression"):
        return None
    return resolve(rule["source_expression"], await rule_admission.all_ses(db))


def no_source_error(rule: Document) -> str:
    return f"no available replica on the source expression {rule.get('source_expression')!r}"


def source_for(lfn: str, replicas: Mapping[str, Collection[str]], sources: set[str] | None) -> str | None:
    """The replica a rule with a source expression copies from ('' when any will do, None when none may)."""
    if sources is None:
        return ""
    allowed = sorted(set(replicas.get(lfn, ())) & sources)
    return allowed[0] if allowed else None


async def submit_for(db: AsyncDatabase[Document], rule: Document, targets: Iterable[tuple[str, str, str]],
                     settings: RuleSettings) -> tuple[list[str], dict[str, list[str]]]:
    """Queue transfers for `(lfn, dest SE, source SE or '')` (one submission per destination; an
    identical open request of anyone is reused), stamped with the rule's VO (whose administrators
    see them, and only they: `catalogue.vos`). Returns the lock ids queued and, by reason,
    those that could not be."""
    by_dest: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for lfn, dest, source in targets:
        by_dest[dest].append({"lfn": lfn, "dest_se": dest, **({"source_se": source} if source else {})})
    queued: list[str] = []
    failed: dict[str, list[str]] = defaultdict(list)
    for dest, items in by_dest.items():
        for start in range(0, len(items), settings.batch):
            part = items[start:start + settings.batch]
            result = await queueing.submit(db, "transfer", part, requester=requester(rule), activity=rule["activity"],
                                           priority=int(rule.get("priority", 3)),
                                           max_attempts=settings.transfer_attempts, vo=rule.get("vo"))
            for item in part:
                lid = lock_id(rule["_id"], item["lfn"], dest)
                if item["lfn"] in result["successful"]:
                    queued.append(lid)
                else:
                    failed[f"transfer not queued: {result['failed'].get(item['lfn'])}"].append(lid)
    return queued, failed


@dataclass
class RuleRequests:
    """What a rule's own requests say about some targets: which have one open, and the latest
    that failed for good."""

    open: set[Target] = field(default_factory=set)
    failed: dict[Target, Document] = field(default_factory=dict)


async def rule_requests(db: AsyncDatabase[Document], rule: Document, targets: set[Target]) -> RuleRequests:
    """The rule's requests for these targets: one cursor over the rule's requests, read to its end
    (keeps only the targets asked about). Index: requests_by_requester."""
    out = RuleRequests()
    if not targets:
        return out
    with database_errors():
        async for r in db[rq.REQUESTS].find({"requester": requester(rule)},
                                            {"lfn": 1, "dest_se": 1, "state": 1, "created": 1, "last_error": 1}
                                            ).batch_size(10_000):
            target = (r["lfn"], r.get("dest_se"))
            if target not in targets:
                continue
            if r["state"] in rq.OPEN_STATES:
                out.open.add(target)
            elif r["state"] == "failed":
                known = out.failed.get(target)
                if known is None or r["created"] > known["created"]:
                    out.failed[target] = r
    return out


async def open_elsewhere(db: AsyncDatabase[Document], targets: list[Target]) -> set[Target]:
    """Which targets have an open transfer anyone else asked for (a rule shares those).
    Index: requests_active_key."""
    if not targets:
        return set()
    keys = {rq.active_key("transfer", lfn, se): (lfn, se) for lfn, se in targets}
    found = await find_by_values(db[rq.REQUESTS], "active_key", keys, {"active_key": 1})
    return {keys[r["active_key"]] for r in found}
