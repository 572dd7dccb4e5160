"""Which upload writes a `copying` replica: a lease on the replica, so that two uploads of one
file to one SE (a retry, two shells, two hosts) never write its bytes at the same time.

`hold_replicas` gives a replica to the caller's upload (its `writer` token on the replica, and
`writer_at` set to now) when the replica is `copying` and has no writer (just registered), is
the caller's already (a renewal), or its writer has not renewed it for LEASE_S (an upload that
died): each is one guarded update on what was read, so of two takers one wins. A replica
another upload renewed within LEASE_S is refused as in progress; a renewal (`renew`) never
takes back a replica another writer took over. The holder renews every LEASE_S / RENEWALS while
it stores and right before it flips or undoes the replica, so a taker (which needs LEASE_S of
silence) never meets a live holder; the flip and the undo's claim name the holder's writer
(`catalogue.replicas.set_replica_statuses`), so one that lost its lease changes nothing. The
lease is taken on `copying` replicas only; an undo's `unavailable` keeps its writer and
`writer_at`, so a transfer setting it `copying` again takes it LEASE_S after that upload's last
renewal (not after the status change), and no later than that.

A transfer's destination replica is held the same way by the marker TRANSFER
(`hold_for_transfers`, renewed with its request's lease): an upload does not write a replica a
transfer is copying to, nor a transfer one an upload is writing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import UpdateMany, UpdateOne

from catalogue.directories import now
from catalogue.files import FILES, fetch_files
from catalogue.writer_tokens import (
    FOUNDING,
    IN_PROGRESS,
    LEASE_S,
    NOT_HELD,
    TRANSFER,
    TRANSFER_LEASE_S,
    WRITER,
    WRITER_AT,
)
from kernel.db import Document, bulk_write_chunked, increment

__all__ = ["LEASE_S", "hold_for_transfers", "hold_replicas"]


def _stamp(at: dt.datetime) -> dt.datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # as stored (BSON keeps milliseconds)


def _aware(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _refusal(lfn: str, se: str, replica: Mapping[str, Any] | None, writer: str, at: dt.datetime,
             renew: bool = False, status: str = "copying") -> str | None:
    """Why the caller may not hold this replica now (with `renew`: keep holding it), or None. An
    upload's hold lapses after LEASE_S of silence, a transfer's after TRANSFER_LEASE_S."""
    if replica is None:
        return f"{lfn} has no replica on SE {se}"
    if replica.get("status") != status:
        return f"replica of {lfn} on SE {se} is {replica.get('status')!r}, not {status!r}"
    held, since = replica.get(WRITER), _aware(replica.get(WRITER_AT, replica.get("modified")))
    if renew and held != writer:
        return f"{IN_PROGRESS}: the replica of {lfn} on SE {se} is not held by this upload any more ({NOT_HELD})"
    lease_s = TRANSFER_LEASE_S if held == TRANSFER else LEASE_S
    if held not in (None, writer) and since is not None and since > at - dt.timedelta(seconds=lease_s):
        who = "a transfer is copying" if held == TRANSFER else "another upload is writing"
        return (f"{IN_PROGRESS}: {who} {lfn} to SE {se} (last heard of at "
                f"{since.isoformat(timespec='seconds')}; taken for dead {lease_s:g} s after that)")
    return None


async def hold_replicas(
    db: Any, writer: str, items: Sequence[Mapping[str, str]], files: Mapping[str, Document], *, renew: bool = False,
    status: str = "copying",
) -> dict[str, dict[str, Any]]:
    """Take or renew the lease of upload `writer` on each replica `{lfn, se}` (one per LFN;
    `files`: the records as just read, with w checked); with `renew`, only renew (a replica
    another writer took over meanwhile is refused, not taken back: its holder lost it for good).
    `status` "unavailable": the replica of an undo cut short (`writer_tokens.UNDOING`), held by
    the reaper to finish it (`transfers.abandoned_uploads`).
    Answers `{"successful": {lfn: {"lease_s", "founding"?}}, "failed": {lfn: reason}}`
    (`founding`: the replica was registered with its file, whose record the holder removes if
    it fails); one bulk write and one read back for the batch."""
    at = _stamp(now())
    failed: dict[str, Any] = {}
    groups: dict[tuple[int, str, str | None], list[str]] = {}
    singles: list[UpdateOne] = []
    for item in items:
        lfn, se = item["lfn"], item["se"]
        found = [(i, r) for i, r in enumerate(files[lfn].get("replicas", [])) if r.get("se") == se]
        index, replica = found[0] if found else (-1, None)
        reason = _refusal(lfn, se, replica, writer, at, renew, status)
        if reason or replica is None:
            failed[lfn] = reason
            continue
        held = replica.get(WRITER)
        if held is None or held == writer:  # the usual cases go many files per update
            groups.setdefault((index, se, held), []).append(lfn)
            continue
        singles.append(UpdateOne(  # a dead upload's: only as read, so one taker wins
            {"_id": lfn, f"replicas.{index}.se": se, f"replicas.{index}.status": status,
             f"replicas.{index}.{WRITER}": held, f"replicas.{index}.modified": replica.get("modified")},
            _taken(index, writer, at)))
    updates: list[UpdateMany | UpdateOne] = [
        UpdateMany({"_id": {"$in": lfns}, f"replicas.{index}.se": se, f"replicas.{index}.status": status,
                    f"replicas.{index}.{WRITER}": {"$exists": False} if held is None else held},
                   _taken(index, writer, at))
        for (index, se, held), lfns in groups.items()]
    if updates or singles:
        await bulk_write_chunked(db[FILES], [*updates, *singles])
    return {"successful": await _held(db, writer, items, failed, at, status), "failed": failed}


def _taken(index: int, writer: str, at: dt.datetime) -> Document:
    return {"$set": {f"replicas.{index}.{WRITER}": writer, f"replicas.{index}.{WRITER_AT}": at,
                     f"replicas.{index}.modified": at},
            **increment({"version": 1})}


async def _held(db: Any, writer: str, items: Sequence[Mapping[str, str]], failed: dict[str, Any],
                at: dt.datetime, status: str) -> dict[str, Any]:
    """Read back which replicas carry the caller's lease now; say why for the others."""
    wanted = [item for item in items if item["lfn"] not in failed]
    if not wanted:
        return {}
    found = await fetch_files(db, [item["lfn"] for item in wanted], {"replicas": 1})
    held: dict[str, Any] = {}
    for item in wanted:
        lfn, se = item["lfn"], item["se"]
        replica = next((r for r in (found.get(lfn) or {}).get("replicas", []) if r.get("se") == se), None)
        if replica is not None and replica.get("status") == status and replica.get(WRITER) == writer:
            held[lfn] = {"lease_s": LEASE_S, **({FOUNDING: True} if replica.get(FOUNDING) else {})}
        else:
            failed[lfn] = _refusal(lfn, se, replica, writer, at, status=status) or \
                f"replica of {lfn} on SE {se} changed meanwhile"
    return held


async def hold_for_transfers(db: Any, items: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Take or renew the transfers' hold (TRANSFER) on their destination replicas `(lfn, se)`, as
    `hold_replicas` does an upload's; answers why each one not held was refused (a live upload
    holds it, or it is not `copying`). One read and one bulk write per round of distinct LFNs."""
    refused: dict[tuple[str, str], str] = {}
    pending = list(dict.fromkeys(items))
    while pending:
        batch: dict[str, str] = {}
        later: list[tuple[str, str]] = []
        for lfn, se in pending:
            if lfn in batch:
                later.append((lfn, se))
            else:
                batch[lfn] = se
        files = await fetch_files(db, list(batch), {"replicas": 1})
        known = {lfn: se for lfn, se in batch.items() if lfn in files}
        refused.update({(lfn, se): f"{lfn}: no such file" for lfn, se in batch.items() if lfn not in files})
        outcome = await hold_replicas(db, TRANSFER, [{"lfn": lfn, "se": se} for lfn, se in known.items()], files)
        refused.update({(lfn, known[lfn]): str(why) for lfn, why in outcome["failed"].items()})
        pending = later
    return refused
