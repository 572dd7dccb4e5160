"""Audit runs: one comparison of an SE's storage with the catalogue, and what it found.

A run (`audit_runs`) is queued by an operator (or by the auditor's own schedule) and done by one
auditor under the named lease "auditor:SE". At most one run per SE is open (queued or running):
the open run carries `open_se`, unique, unset when the run ends. What a run found is one document
per entry in `audit_entries`: `lost` (in the catalogue, not on storage), `dark` (on storage, not
in the catalogue, older than the grace period), `size_mismatch` and `checksum_mismatch` (read
together as the kind `mismatch`).

Each start of a run (its first, or a takeover of a run whose auditor died or stalled past its
lease) gives it a new `attempt`. Every write of a run's progress, end and entries names the
attempt it belongs to: an auditor that stalled and resumed after another took its run over
changes nothing of it (its counters and end are refused by their guard; its entries carry its
attempt, which no reader reads and the run's end removes).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, TypedDict

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel.claims import now
from kernel.db import Document, IndexSpec, database_errors, iterate
from kernel.errors import Conflict, InvalidInput, NotFound

AUDIT_RUNS = "audit_runs"
AUDIT_ENTRIES = "audit_entries"
EntryKind = Literal["lost", "dark", "size_mismatch", "checksum_mismatch"]
ENTRY_KINDS: tuple[EntryKind, ...] = ("lost", "dark", "size_mismatch", "checksum_mismatch")
# Kinds a reader may ask for: each kind, and both mismatches at once.
KIND_FILTERS: dict[str, Any] = {**{k: k for k in ENTRY_KINDS},
                                "mismatch": {"$in": ["size_mismatch", "checksum_mismatch"]}}
OPEN_STATES = ("queued", "running")

INDEXES = [
    # one open run per SE: insert_one fails on a second
    IndexSpec(AUDIT_RUNS, [("open_se", 1)], name="audit_runs_open_se", unique=True, sparse=True),
    # list: audit_runs.find({se?}).sort(created, -1)
    IndexSpec(AUDIT_RUNS, [("created", -1)], name="audit_runs_by_created"),
    # show: audit_entries.find({run, kind?}).sort(lfn)
    IndexSpec(AUDIT_ENTRIES, [("run", 1), ("kind", 1), ("lfn", 1)], name="audit_entries_by_run"),
]


class AuditRun(TypedDict, total=False):
    """A document of `audit_runs`."""

    _id: str
    se: str
    dump: str | None
    state: str
    open_se: str
    requester: str
    created: dt.datetime
    started: dt.datetime | None
    finished: dt.datetime | None
    error: str | None
    counts: dict[str, int]
    attempt: str


async def queue_run(db: AsyncDatabase[Document], se: str, *, requester: str, dump: str | None = None) -> Document:
    """Queue a run for se; Conflict (409) while another run of se is open."""
    if dump is not None and (not dump.startswith("/") or "\n" in dump):
        raise InvalidInput(f"a dump is named by its absolute path on the SE, not {dump!r}")
    run: AuditRun = {"_id": f"audit-{uuid.uuid4().hex[:12]}", "se": se, "dump": dump, "state": "queued",
                     "open_se": se, "requester": requester, "created": now(), "started": None, "finished": None,
                     "error": None, "counts": {}}
    with database_errors():
        try:
            await db[AUDIT_RUNS].insert_one(dict(run))
        except DuplicateKeyError as exc:
            raise Conflict(f"SE {se} has an audit run queued or running already; wait for it to end") from exc
    return dict(run)


async def open_runs(db: AsyncDatabase[Document]) -> list[Document]:
    """Runs queued or running (a running run whose auditor died is taken over under its SE's lease)."""
    with database_errors():
        return await db[AUDIT_RUNS].find({"state": {"$in": list(OPEN_STATES)}}).sort("created", 1).to_list()


async def last_created(db: AsyncDatabase[Document], se: str) -> dt.datetime | None:
    """When se's latest run was queued."""
    with database_errors():
        doc = await db[AUDIT_RUNS].find_one({"se": se}, {"created": 1}, sort=[("created", -1)])
    return doc["created"] if doc else None


async def start(db: AsyncDatabase[Document], run_id: str) -> Document | None:
    """Mark an open run running (again) under a new attempt, and forget what an earlier,
    interrupted attempt found; the run as started (None: it is not open)."""
    with database_errors():
        doc = await db[AUDIT_RUNS].find_one_and_update(
            {"_id": run_id, "state": {"$in": list(OPEN_STATES)}},
            {"$set": {"state": "running", "started": now(), "counts": {}, "attempt": uuid.uuid4().hex}},
            return_document=ReturnDocument.AFTER)
        if doc is not None:
            await db[AUDIT_ENTRIES].delete_many({"run": run_id})
    return doc


def _mine(run: Document) -> Document:
    """The filter of a run as this attempt of it (`start`) left it."""
    return {"_id": run["_id"], "attempt": run.get("attempt")}


async def progress(db: AsyncDatabase[Document], run: Document, counts: dict[str, int]) -> None:
    """Publish a running run's counters (unless another attempt has the run now)."""
    with database_errors():
        await db[AUDIT_RUNS].update_one({**_mine(run), "state": "running"}, {"$set": {"counts": dict(counts)}})


async def finish(db: AsyncDatabase[Document], run: Document, counts: dict[str, int], *,
                 error: str | None = None) -> bool:
    """End a run as started (`start`): done with its counters, or failed with an error; it is no
    longer open. False when another attempt has the run now (nothing written)."""
    with database_errors():
        ended = await db[AUDIT_RUNS].update_one(
            {**_mine(run), "state": "running"},
            {"$set": {"state": "failed" if error else "done", "finished": now(), "counts": dict(counts),
                      "error": error}, "$unset": {"open_se": ""}})
        if ended.matched_count:  # what stalled attempts wrote after this one began goes
            await db[AUDIT_ENTRIES].delete_many({"run": run["_id"], "attempt": {"$ne": run.get("attempt")}})
    return bool(ended.matched_count)


async def add_entries(db: AsyncDatabase[Document], run: Document, entries: Sequence[Document]) -> None:
    """Record what a run found (`{kind, lfn, ...}` each), under the run's attempt (`start`)."""
    if entries:
        with database_errors():
            await db[AUDIT_ENTRIES].insert_many([{**e, "run": run["_id"], "se": run["se"],
                                                  "attempt": run.get("attempt")} for e in entries])


async def _of_run(db: AsyncDatabase[Document], run_id: str) -> Document:
    """The filter of a run's entries: those of the attempt that has it now."""
    with database_errors():
        run = await db[AUDIT_RUNS].find_one({"_id": run_id}, {"attempt": 1})
    return {"run": run_id, "attempt": (run or {}).get("attempt")}


async def get_run(db: AsyncDatabase[Document], run_id: str) -> Document:
    with database_errors():
        doc = await db[AUDIT_RUNS].find_one({"_id": run_id})
    if doc is None:
        raise NotFound(f"audit run {run_id!r} does not exist")
    return doc


async def list_runs(db: AsyncDatabase[Document], *, se: str | None = None, limit: int = 100) -> list[Document]:
    """The latest runs, newest first. Index: audit_runs_by_created."""
    with database_errors():
        return await db[AUDIT_RUNS].find({"se": se} if se else {}).sort("created", -1).limit(limit).to_list()


def entries(db: AsyncDatabase[Document], run_id: str, kind: str | None) -> AsyncIterator[Document]:
    """A run's entries (of one kind), by LFN. Index: audit_entries_by_run."""
    if kind is not None and kind not in KIND_FILTERS:
        raise InvalidInput(f"entry kind {kind!r} is not one of {', '.join(KIND_FILTERS)}")

    async def rows() -> AsyncIterator[Document]:
        query: dict[str, Any] = {**await _of_run(db, run_id), **({"kind": KIND_FILTERS[kind]} if kind else {})}
        async for row in iterate(db[AUDIT_ENTRIES].find(query, {"_id": 0, "attempt": 0})
                                 .sort([("kind", 1), ("lfn", 1)]).batch_size(5000)):
            yield row

    return rows()


async def allow_cleaning(db: AsyncDatabase[Document], run_id: str) -> None:
    """An operator asked for the dark files of run to be deleted."""
    with database_errors():
        await db[AUDIT_ENTRIES].update_many({**await _of_run(db, run_id), "kind": "dark"},
                                            {"$set": {"clean": "requested"}})


async def cleanable(db: AsyncDatabase[Document], run_id: str, se: str, lfn: str) -> Document | None:
    """The dark entry of lfn on se in run, if an operator asked for its deletion: what lets the
    reaper delete a file the catalogue does not know."""
    with database_errors():
        return await db[AUDIT_ENTRIES].find_one({**await _of_run(db, run_id), "kind": "dark", "se": se, "lfn": lfn,
                                                 "clean": "requested"})


async def cleaned(db: AsyncDatabase[Document], run_id: str, lfn: str, outcome: str) -> None:
    """Record what became of a dark file's deletion. "deleted" stays: a reaper that stalled
    before its checks and resumed after its successor deleted the file (and another was
    registered there) finds it "gone" or "kept", which is not what became of the dark file."""
    with database_errors():
        await db[AUDIT_ENTRIES].update_one({**await _of_run(db, run_id), "kind": "dark", "lfn": lfn,
                                            "clean": {"$ne": "deleted"}}, {"$set": {"clean": outcome}})


async def dark_lfns(db: AsyncDatabase[Document], run_id: str) -> list[str]:
    """The LFNs a run found dark."""
    with database_errors():
        return await db[AUDIT_ENTRIES].distinct("lfn", {**await _of_run(db, run_id), "kind": "dark"})
