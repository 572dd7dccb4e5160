"""Deleting a replica safely: first retire it in the catalogue (available → unavailable, so no
one reads it any more), then delete its bytes, then remove the record.

Retiring is a compare-and-set on the file's `version` read together with the other replicas:
two reapers retiring the last two copies of a file on two SEs cannot both succeed, because the
first retirement bumps the version the second was decided on.

Protection contract (for the rules engineer and anyone else who wants a replica kept): a
replica is never deleted by the reaper's space cleanup, nor by a deletion request naming its
SE, while it has
- `locks` > 0 — the number of rule locks on it, the size of its `lock_rules` (the rules holding
  them; both set together by `rules.locks.change_replica_locks`, compare-and-set on the
  file's `version` like `catalogue.replicas.set_replica_status`), or
- `protected: true` — a manual hold, or
- `pinned_until` later than now — a pin (a job reading it, a staged file being used).
Only an explicit request to delete every replica of a file (administrators) overrides them; the
removal is in the catalogue's change feed, from which the rules whose locks protected the
replica learn it (`rules.feed`): their evaluator puts those locks back to replicating and
copies the file again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import FILES
from catalogue.replica_urls import se_url
from catalogue.replicas import pull_replicas, set_status_if_unchanged
from catalogue.storage_elements import StorageElement
from kernel.db import Document, database_errors
from kernel.errors import InvalidInput, NotFound
from storage_plugins.registry import plugin_for
from transfers.endpoints import endpoints


class Refused(Exception):
    """The replica must not be deleted (last copy, locked, protected, pinned)."""


def protection(replica: Mapping[str, Any], at: dt.datetime) -> str | None:
    """Why a replica is protected from deletion, or None."""
    if int(replica.get("locks") or 0) > 0:
        return f"locked by {replica['locks']} rule lock(s)"
    if replica.get("protected"):
        return "protected"
    pinned = replica.get("pinned_until")
    if isinstance(pinned, dt.datetime) and pinned > at:
        return f"pinned until {pinned.isoformat()}"
    return None


def _check_inside(se: StorageElement, lfn: str, replica: Mapping[str, Any]) -> None:
    try:
        se_url(se, lfn, replica.get("url") or None)
    except InvalidInput as exc:
        raise Refused(f"{lfn} on {se.name}: {exc.message}") from exc


async def retire(
    db: AsyncDatabase[Document], lfn: str, se: str, *, allow_last: bool, override_protection: bool = False,
    inside: StorageElement | None = None,
) -> Document | None:
    """Mark the replica of lfn on se `unavailable` ahead of deletion; returns it, or None if absent.

    Raises Refused when it is the file's last available replica (unless allow_last) or protected,
    or when its URL is not `inside`'s own URL for lfn (checked before anything changes).
    """
    for _ in range(5):
        with database_errors():
            doc = await db[FILES].find_one({"_id": lfn}, {"replicas": 1, "version": 1})
        replicas = (doc or {}).get("replicas", [])
        index = next((i for i, r in enumerate(replicas) if r.get("se") == se), None)
        if doc is None or index is None:
            return None
        replica = replicas[index]
        if inside is not None:
            _check_inside(inside, lfn, replica)
        if replica.get("status") == "copying":
            raise Refused(f"{lfn} on {se}: a transfer is writing it; cancel the transfer first")
        at = dt.datetime.now(dt.UTC)
        reason = None if override_protection else protection(replica, at)
        if reason:
            raise Refused(f"{lfn} on {se}: {reason}")
        others = [r for r in replicas if r.get("se") != se and r.get("status") == "available"]
        if not others and not allow_last and replica.get("status") == "available":
            raise Refused(f"{lfn} on {se}: the last available replica; only a request to delete every replica "
                          "may remove it")
        if await set_status_if_unchanged(db, lfn, se, index, doc.get("version"), "unavailable"):
            return {**replica, "status": "unavailable"}
    raise Refused(f"{lfn} on {se}: the file kept changing; try again")


async def delete_retired(
    db: AsyncDatabase[Document], lfn: str, se: StorageElement, replica: Mapping[str, Any],
    credentials: Mapping[str, Mapping[str, str]],
) -> None:
    """Delete a retired replica's bytes (already gone is fine), then its catalogue record."""
    await delete_retired_bytes(lfn, se, replica, credentials)
    # Through the catalogue, so that the SE's usage loses the replica too.
    await pull_replicas(db, [(lfn, se.name)], status="unavailable")


async def delete_retired_bytes(lfn: str, se: StorageElement, replica: Mapping[str, Any],
                               credentials: Mapping[str, Mapping[str, str]]) -> None:
    """Delete a retired replica's bytes (already gone is fine); its record is the caller's to
    remove (`catalogue.replicas.pull_replicas` with status `unavailable`, many at once)."""
    ep = endpoints(se, lfn, "delete", credentials=credentials, registered_url=replica.get("url"))[0]
    with contextlib.suppress(NotFound):
        await plugin_for(ep.url, ep.options).delete(ep.url)


async def delete_replica(
    db: AsyncDatabase[Document], lfn: str, se: StorageElement, credentials: Mapping[str, Mapping[str, str]], *,
    allow_last: bool, override_protection: bool = False,
) -> bool:
    """Retire and delete one replica; False if there was none. Raises Refused."""
    replica = await retire(db, lfn, se.name, allow_last=allow_last, override_protection=override_protection,
                           inside=se)
    if replica is None:
        return False
    # An override's removal reaches the rules that locked it through the change feed.
    await delete_retired(db, lfn, se, replica, credentials)
    return True
