"""The rule daemons' hold on a rule: claim it under a lease, renew it, record what they found,
count a failed pass, give it back, or remove it once its locks are gone. Only the lease's
holder changes a rule's locks (`rules.locks`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import file_rules
from catalogue.directories import now
from kernel import claims
from kernel.db import INDEX_ORDER, Document, database_errors, increment
from rules.triggers import RULES


async def claim(db: AsyncDatabase[Document], worker: str, query: Document | Sequence[Document], *, lease_s: float,
                sort: str = "due") -> Document | None:
    """Take the next rule that no daemon holds, under a lease: the first by `sort` matching query,
    or matching the first of several queries that matches one (`kernel.claims.claim_in_turn`).

    Read under INDEX_ORDER (states are strings, `dirty` and `locked` booleans, `due` and
    `expires_at` dates or null): the rule daemons look every cycle, and on the embedded database
    a look that read every rule cost more than a core at 100k rules (bench/idle.py --of rules);
    a query whose conditions an index holds (a state, a flag, a date bound) reads only its rules."""
    taken = await claims.claim_in_turn(db[RULES], worker, [query] if isinstance(query, dict) else query,
                                       lease_s=lease_s, sort=[(sort, 1)], limit=1, comment=INDEX_ORDER)
    return taken[0] if taken else None


async def renew(db: AsyncDatabase[Document], rule_id: str, worker: str, *, lease_s: float) -> bool:
    """Extend a claimed rule's lease; False when `worker` no longer holds it (or the rule is gone)."""
    return bool(await claims.renew(db[RULES], [rule_id], worker, lease_s=lease_s))


async def set_fields(db: AsyncDatabase[Document], rule_id: str, fields: dict[str, Any], *,
                     make_dirty: bool = False, guard: dict[str, Any] | None = None) -> bool:
    """Record what a daemon holding the rule found (evaluation results, errors); with
    `make_dirty`, also ask for a new evaluation (bumping `generation`). Only while the rule
    matches `guard`; False when it did not."""
    update: dict[str, Any] = {"$set": {**fields, **({"dirty": True} if make_dirty else {})}}
    if make_dirty:
        update.update(increment({"generation": 1}))
    with database_errors():
        result = await db[RULES].update_one({"_id": rule_id, **(guard or {})}, update)
    return result.matched_count == 1


def unresumed(rule: Document) -> Document:
    """The guard of a failed pass's writes (its error, failure count, backoff, suspension): the rule
    not resumed since `rule` was read. A resume clears them; written after it, they undid it (the
    mended rule showed the old error and waited out a backoff). Not `generation`, which new content
    bumps too: a rule on a dataset that keeps growing would never back off."""
    return {"resumes": rule.get("resumes")}


async def count_failure(db: AsyncDatabase[Document], rule: Document, worker: str,
                        field: str = "evaluation_failures") -> int | None:
    """Count one more failed pass (an evaluation's, or a cleaning's or a repair's with `field`
    `cleaning_failures` or `repair_failures`) of a rule `worker` holds, as read (`unresumed`); the
    count now, or None when `worker` no longer holds the rule or it was resumed since."""
    with database_errors():
        counted = await db[RULES].find_one_and_update(
            {"_id": rule["_id"], claims.OWNER: worker, **unresumed(rule)}, increment({field: 1}),
            return_document=ReturnDocument.AFTER)  # no projection: FerretDB 1.24 has none here
    return None if counted is None else int(counted[field])


async def remove(db: AsyncDatabase[Document], rule: Document, worker: str) -> bool:
    """Delete a rule whose locks are gone (the cleaner, holding its lease); a file it names is
    unnamed first (`catalogue.file_rules`: never a name without its rule)."""
    if rule.get("did_type") == "file":
        await file_rules.unname_file(db, rule["did"], rule["_id"])
    with database_errors():
        result = await db[RULES].delete_one({"_id": rule["_id"], claims.OWNER: worker})
    return result.deleted_count == 1


async def clear_dirty(db: AsyncDatabase[Document], rule_id: str, generation: int) -> bool:
    """The evaluation that read generation `generation` is done: clear `dirty` unless the content
    changed again meanwhile."""
    with database_errors():
        result = await db[RULES].update_one({"_id": rule_id, "generation": generation}, {"$set": {"dirty": False}})
    return result.modified_count == 1


async def release(db: AsyncDatabase[Document], rule: Document, worker: str, fields: dict[str, Any], *,
                  guard: dict[str, Any] | None = None) -> bool:
    """Give a claimed rule back, setting fields (only the lease holder can, and only while the
    rule matches `guard`)."""
    return await claims.release(db[RULES], rule["_id"], worker, guard=guard,
                                update={"$set": {**fields, "modified": now()}})
