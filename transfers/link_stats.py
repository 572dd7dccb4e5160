"""Transfer statistics per link (source SE → destination SE), kept in MongoDB so that any
stateless API server can report them: every worker adds what a cycle finished with one bulk of
`$inc` upserts (one per link), and the queue's depths are counted from the requests themselves.
A link also counts the database commands its workers sent per file they finished there
(`db_commands`, the worker's commands since its last report, shared out by files), and keeps
its counters per VO of the requests too (`vos.<VO>.…`, read by `link_statistics_by_vo`).
A worker counts each settling under an id (`Counted`): tried again after a write that landed but
whose reply was lost, it is not counted twice (`link_series.counted_once`, in the same bulk writes).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, bulk_write_chunked, count_by, database_errors
from kernel.principal import DEFAULT_VO
from transfers.link_series import LINK_HOURS, SETTLES, counted_once, hour_updates
from transfers.requests import REQUESTS

LINK_STATS = "link_stats"
K = TypeVar("K")


def link_id(source: str, dest: str) -> str:
    return f"{source}>{dest}"


@dataclass(frozen=True)
class Outcome:
    """One finished transfer (or failed attempt) on a link."""

    source: str
    dest: str
    ok: bool
    nbytes: int = 0
    seconds: float = 0.0
    mode: str | None = None
    reason: str | None = None
    activity: str = "default"
    vo: str = DEFAULT_VO  # the VO of the request


@dataclass(frozen=True)
class Counted:
    """Outcomes counted together, once, under `token` (a worker's settling; a try again of the
    same writes is recognised by it), with the database commands sent for them and the time
    that places them in the hourly series."""

    outcomes: Sequence[Outcome]
    db_commands: int = 0
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


async def record(
    db: AsyncDatabase[Document], source: str, dest: str, *, ok: bool, nbytes: int = 0, seconds: float = 0.0,
    mode: str | None = None, reason: str | None = None, activity: str = "default", vo: str = DEFAULT_VO,
) -> None:
    """Add one finished transfer (or failed attempt) to its link's counters."""
    await record_many(db, [Outcome(source, dest, ok, nbytes, seconds, mode, reason, activity, vo)])


def vo_key(vo: str) -> str:
    """A VO's name as a field name (a `.` would nest; VO names hold no `$`)."""
    return vo.replace("%", "%25").replace(".", "%2E")


def _vo_name(key: str) -> str:
    return key.replace("%2E", ".").replace("%25", "%")


def _vo_increments(outcome: Outcome) -> dict[str, Any]:
    inc = {k: v for k, v in _increments(outcome).items() if not k.startswith("mode.")}
    return {f"vos.{vo_key(outcome.vo)}.{name}": value for name, value in inc.items()}


def _increments(outcome: Outcome) -> dict[str, Any]:
    if not outcome.ok:
        return {"failed": 1, f"failures.{outcome.reason or 'other'}": 1}
    inc: dict[str, Any] = {"done": 1, "bytes": outcome.nbytes, "seconds": outcome.seconds}
    if outcome.mode:
        inc[f"mode.{outcome.mode}"] = 1
    return inc


def _totals(outcomes: Sequence[Outcome], key: Callable[[Outcome], K], *, per_vo: bool = False,
            ) -> dict[K, dict[str, Any]]:
    """The outcomes' increments summed per key (a link, or a link and an activity), with each
    VO's share of them when `per_vo`."""
    out: dict[K, dict[str, Any]] = {}
    for outcome in outcomes:
        totals = out.setdefault(key(outcome), {})
        both = {**_increments(outcome), **(_vo_increments(outcome) if per_vo else {})}
        for name, value in both.items():
            totals[name] = totals.get(name, 0) + value
    return out


async def record_many(db: AsyncDatabase[Document], outcomes: Sequence[Outcome], *, db_commands: int = 0) -> None:
    """Add finished transfers to their links' counters: one upsert per link in one bulk write
    (and the same for the hourly series, `record_series`). `db_commands` sent for them are
    shared out over the links by files done."""
    counts = [Counted(outcomes, db_commands)]
    await record_links(db, counts)
    await record_series(db, counts)


async def record_series(db: AsyncDatabase[Document], counts: Sequence[Counted]) -> None:
    """Add counts to the hourly series of their links and activities, each once (one bulk write)."""
    updates = [update for count in counts if count.outcomes
               for update in hour_updates(_totals(count.outcomes, lambda o: (o.source, o.dest, o.activity)),
                                          at=count.at, token=count.token)]
    if updates:
        await bulk_write_chunked(db[LINK_HOURS], updates, ordered=True)


async def record_links(db: AsyncDatabase[Document], counts: Sequence[Counted]) -> None:
    """`record_many`'s first step: the links' counters alone, each count once (one bulk write)."""
    updates = [update for count in counts if count.outcomes for update in _link_updates(count)]
    if updates:
        with database_errors():
            await bulk_write_chunked(db[LINK_STATS], updates, ordered=True)


def _link_updates(count: Counted) -> list[Any]:
    per_link = _totals(count.outcomes, lambda o: (o.source, o.dest), per_vo=True)
    done = sum(1 for o in count.outcomes if o.ok)
    if count.db_commands and done:
        shares = [(link, totals.get("done", 0)) for link, totals in per_link.items() if totals.get("done")]
        left = count.db_commands
        for index, (link, files) in enumerate(shares):
            share = left if index == len(shares) - 1 else count.db_commands * files // done
            per_link[link]["db_commands"] = share
            left -= share
    return [update for (source, dest), inc in per_link.items()
            for update in counted_once(link_id(source, dest), {"source": source, "dest": dest, "last": count.at},
                                       inc, count.token, on_insert={"first": count.at})]


async def link_statistics(db: AsyncDatabase[Document]) -> list[Document]:
    """Every link's counters, with its throughput: bytes over the time copies took (per-transfer
    rate times concurrency) and over the wall-clock span between its first and last transfer."""
    with database_errors():
        docs = await db[LINK_STATS].find({}, {SETTLES: 0}).sort("_id", 1).to_list()
    out = []
    for doc in docs:
        span = ((doc["last"] - doc["first"]).total_seconds()) if doc.get("first") and doc.get("last") else 0.0
        done, nbytes, seconds = doc.get("done", 0), doc.get("bytes", 0), doc.get("seconds", 0.0)
        out.append({
            "source": doc["source"], "dest": doc["dest"], "done": done, "failed": doc.get("failed", 0),
            "bytes": nbytes, "copy_seconds": round(seconds, 3),
            "db_commands": int(doc.get("db_commands", 0)),
            "db_commands_per_file": round(doc["db_commands"] / done, 3) if done and doc.get("db_commands") else None,
            "mean_file_mb_s": round(nbytes / seconds / 1e6, 3) if seconds > 0 else None,
            "wall_mb_s": round(nbytes / span / 1e6, 3) if span > 0 else None,
            "modes": doc.get("mode", {}), "failures": doc.get("failures", {}),
            "first": doc.get("first"), "last": doc.get("last"),
        })
    return out


COUNTED = ("done", "failed", "bytes", "seconds")


async def link_statistics_by_vo(db: AsyncDatabase[Document]) -> list[Document]:
    """Each link's counters per VO of the requests: {source, dest, vo, done, failed, bytes,
    seconds, failures}. What a link counted before it kept VOs apart is the VO `local`'s (as
    every object stored before VOs)."""
    with database_errors():
        docs = await db[LINK_STATS].find({}, {SETTLES: 0}).sort("_id", 1).to_list()
    rows = []
    for doc in docs:
        per_vo = {_vo_name(k): _flat(v) for k, v in doc.get("vos", {}).items()}
        legacy = _flat(doc)
        for counts in per_vo.values():
            legacy = {name: n - counts.get(name, 0) for name, n in legacy.items()}
        local = per_vo.setdefault(DEFAULT_VO, {})
        for name, n in legacy.items():
            local[name] = local.get(name, 0) + max(0, n)
        for vo, counts in sorted(per_vo.items()):
            if any(counts.get(name) for name in COUNTED):
                failures = {k.removeprefix("failures."): n for k, n in counts.items()
                            if k.startswith("failures.") and n}
                rows.append({"source": doc["source"], "dest": doc["dest"], "vo": vo,
                             **{name: counts.get(name, 0) for name in COUNTED}, "failures": failures})
    return rows


def _flat(counts: Document) -> dict[str, Any]:
    """A link's (or one VO's) counters with failures as `failures.<reason>` keys."""
    return {**{name: counts.get(name, 0) for name in COUNTED},
            **{f"failures.{reason}": n for reason, n in counts.get("failures", {}).items()}}


async def queue_depths(db: AsyncDatabase[Document], *, by_vo: bool = False) -> list[Document]:
    """Requests counted by kind and state, and queued transfers by destination SE (and by the
    requests' VO, `vo`, when `by_vo`). On the embedded database they are counted in the index
    `requests_by_state_kind_dest_vo` (its upkeep costs a transferred file ~0.06-0.08 database
    CPU-ms since the build's cairn.12 writes a bulk's statements together; 0.24-0.26 before), so a
    scrape does not read every request ever held."""
    rows = await count_by(db[REQUESTS], ["state", "kind", "dest_se", *(["vo"] if by_vo else [])],
                          absent={"vo": DEFAULT_VO})
    return sorted(
        ({"kind": r["kind"], "state": r["state"], "dest_se": r["dest_se"],
          **({"vo": r["vo"]} if by_vo else {}), "requests": r["n"]} for r in rows),
        key=lambda r: (str(r["kind"]), str(r["state"]), str(r["dest_se"]), str(r.get("vo"))),
    )


def db_commands_per_file(links: Sequence[Document]) -> float | None:
    """Database commands the workers sent per file they transferred, over the links given (as
    `link_statistics` reports them; links whose workers reported no commands are left out)."""
    commands = sum(link["db_commands"] for link in links)
    done = sum(link["done"] for link in links if link["db_commands"])
    return round(commands / done, 3) if done else None


async def failures_by_reason(db: AsyncDatabase[Document]) -> dict[str, int]:
    """Failed attempts summed over links, by reason."""
    totals: dict[str, int] = {}
    for link in await link_statistics(db):
        for reason, n in link["failures"].items():
            totals[reason] = totals.get(reason, 0) + n
    return totals
