"""Feeding transformations with input files: the initial query (files that existed before the
transformation), and the catalogue's change feed (files registered, or whose metadata changed,
after). Both end in `transformation_files.add_files` (an idempotent bulk upsert), only for files
the owner may read, so a transformation never feeds on a file its owner could not.

The initial query streams the owner's `find` in LFN order, a batch at a time, saving the last
LFN after each batch (a restarted feeder resumes there): memory stays flat for any number of
files. The feed consumer ("transformations") evaluates each running transformation's query
against the batch's LFNs with one `find` per transformation (the compiled query AND `_id $in`),
and a directory whose metadata changed as the query scoped to that directory.

Leaving: a file whose metadata changed (its own, or its directory's) so that the query no longer
matches it, or that was removed from the catalogue, is dropped from a transformation while it is
still unused (status removed); one assigned or processed stays as it is (its task ran or runs on
it). A removed file that comes to match again is unused again. (Inputs are queries over a
directory, not datasets, so an attachment or detachment changes no transformation's input.)
Files added after a clean (or delete) of the transformation began are deleted by the feeder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.collection_names import FILES
from catalogue.directories import fetch_directories
from catalogue.files import authorized_files
from catalogue.find import open_query, query_filter
from catalogue.lfn import ROOT
from catalogue.permissions import READ
from catalogue.vos import confine_owner
from kernel.daemon import one_of_many
from kernel.db import Document, read_by_ids
from kernel.principal import Principal
from productions import transformation_files, transformations

CONSUMER = "transformation-feeder"
FILE_EVENTS = ("file_registered", "metadata_changed", "replica_added")
# Transformations the feed feeds: a stopped one too (it makes no tasks, but `start` resumes it
# with what was registered meanwhile).
FEEDING = ("new", "active", "flushing", "stopped")
# Events after which a file may no longer belong to a transformation.
LEAVING_EVENTS = ("metadata_changed", "file_removed")
BATCH = 1000
log = logging.getLogger("cairn.productions")


def group_key(doc: Document) -> str | None:
    grouping = doc["spec"].get("grouping") or {}
    return grouping.get("key") if grouping.get("plugin") == "meta" else None


def _needs_input(doc: Document) -> bool:
    return doc["spec"].get("input_query") is not None


async def initial_feed(db: AsyncDatabase[Document], doc: Document) -> int:
    """Feed the files the query finds now (resuming after the saved LFN); then the
    transformation is active. Returns how many files were added."""
    added = 0
    if _needs_input(doc):
        spec = doc["spec"]
        results = await open_query(db, await _owner(db, doc), spec["input_query"],
                                   scope=spec["input_path"], after=doc.get("initial_after"))
        batch: list[Document] = []
        async for found in results:
            batch.append(found)
            if len(batch) >= BATCH:
                added += await _add_batch(db, doc, batch)
                batch = []
        added += await _add_batch(db, doc, batch)
    await transformations.set_state(db, doc["_id"], ("new",), "active")
    return added


async def _add_batch(db: AsyncDatabase[Document], doc: Document, batch: list[Document]) -> int:
    if not batch:
        return 0
    # find()'s records carry `meta` under the name the file view uses; keep the stored shape.
    records = [{"_id": d["_id"], "size": d.get("size"), "meta_effective": d.get("meta_effective") or d.get("meta")}
               for d in batch]
    added = await transformation_files.add_files(db, doc["_id"], records, group_key(doc))
    await _unless_cleaned_meanwhile(db, doc)
    await transformations.save_initial_progress(db, doc["_id"], batch[-1]["_id"])
    return added


async def _matching(db: AsyncDatabase[Document], doc: Document, lfns: Sequence[str]) -> set[str]:
    """Those of these files the transformation's query matches now (one query)."""
    spec = doc["spec"]
    flt = await query_filter(db, spec["input_query"], spec["input_path"], principal=await _owner(db, doc))
    return {d["_id"] async for d in read_by_ids(db[FILES], lfns, {"_id": 1}, flt=flt)}


async def feed_lfns(db: AsyncDatabase[Document], doc: Document, lfns: Sequence[str],
                    leaving: Sequence[str] = ()) -> int:
    """Evaluate the transformation's query against these files (one query) and add those that
    match and that its owner may read; of `leaving` (files whose metadata changed or that were
    removed), drop the unused ones that no longer match."""
    if not lfns or not _needs_input(doc):
        return 0
    matched = await _matching(db, doc, lfns)
    gone = [lfn for lfn in leaving if lfn not in matched]
    if gone:
        await transformation_files.drop_unused(db, doc["_id"], gone)
    if not matched:
        return 0
    allowed, _ = await authorized_files(db, await _owner(db, doc), sorted(matched), READ)
    added = await transformation_files.add_files(db, doc["_id"], list(allowed.values()), group_key(doc))
    if added < len(allowed):  # some were known: a removed one that matches again is unused again
        await transformation_files.revive(db, doc["_id"], list(allowed))
    return added


def _narrower(a: str, b: str) -> str | None:
    """The narrower of two nested directories, or None when neither holds the other."""
    for outer, inner in ((a, b), (b, a)):
        if outer == ROOT or inner == outer or inner.startswith(outer.rstrip("/") + "/"):
            return inner
    return None


async def feed_directory(db: AsyncDatabase[Document], doc: Document, directory: str) -> int:
    """Files below a directory whose (inherited) metadata changed, as the owner's query finds them."""
    scope = _narrower(directory, doc["spec"]["input_path"])
    if scope is None or not _needs_input(doc):
        return 0
    results = await open_query(db, await _owner(db, doc), doc["spec"]["input_query"], scope=scope)
    added, batch = 0, []
    async for found in results:
        batch.append({"_id": found["_id"], "size": found.get("size"), "meta_effective": found.get("meta_effective")})
        if len(batch) >= BATCH:
            added += await transformation_files.add_files(db, doc["_id"], batch, group_key(doc))
            batch = []
    added += await transformation_files.add_files(db, doc["_id"], batch, group_key(doc))
    await _drop_left_below(db, doc, scope)
    return added


async def _drop_left_below(db: AsyncDatabase[Document], doc: Document, scope: str) -> None:
    """Drop the unused files below `scope` that the query no longer matches (a batch at a time)."""
    after = None
    while lfns := await transformation_files.unused_below(db, doc["_id"], scope, after, BATCH):
        matched = await _matching(db, doc, lfns)
        await transformation_files.drop_unused(db, doc["_id"], [lfn for lfn in lfns if lfn not in matched])
        after = lfns[-1]


async def handle_events(db: AsyncDatabase[Document], events: list[change_feed.Event]) -> int:
    """Feed every running transformation from one batch of change-feed events."""
    kinds = FILE_EVENTS + LEAVING_EVENTS
    paths = list(dict.fromkeys(e["did"] for e in events if e["kind"] in kinds and e["did"].startswith("/")))
    if not paths:
        return 0
    # Only a metadata change may be about a directory (its subtree is then looked at).
    changed_meta = sorted({e["did"] for e in events if e["kind"] == "metadata_changed"})
    directories = set(await fetch_directories(db, changed_meta)) if changed_meta else set()
    files = [p for p in paths if p not in directories]
    leaving = sorted({e["did"] for e in events if e["kind"] in LEAVING_EVENTS} - directories)
    added = 0
    for doc in await transformations.running(db, FEEDING):
        added += await _feed_isolated(db, doc, files, leaving, sorted(directories))
    return added


async def _feed_isolated(db: AsyncDatabase[Document], doc: Document, files: Sequence[str], leaving: Sequence[str],
                         directories: Sequence[str]) -> int:
    """One transformation's share of a batch. Its own error (a query that compiles no more once a
    field is declared) is kept on it and the feed goes on: the feed's position is everyone's, and
    one transformation failing a batch held every transformation's feed at that batch."""
    async def feed() -> int:
        added = await feed_lfns(db, doc, files, leaving)
        for directory in directories:
            added += await feed_directory(db, doc, directory)
        return added

    added, why = await one_of_many(feed(), f"transformation {doc['_id']}: feeding", log)
    if why is not None:
        await transformations.record_feed_error(db, doc["_id"], why)
    if added:
        await _unless_cleaned_meanwhile(db, doc)
    return added or 0


async def _unless_cleaned_meanwhile(db: AsyncDatabase[Document], doc: Document) -> None:
    """A clean (or delete) since the feeder read the transformation deleted the file statuses it
    found: those added after are deleted here (after the clean's look, nobody else would)."""
    if await transformations.cleaned_or_gone(db, doc["_id"]):
        await transformation_files.delete_all(db, doc["_id"])


async def follow(db: AsyncDatabase[Document], worker: str, *, lease_s: float) -> int:
    """Handle the feed's new events for the transformations; returns how many events were read."""

    async def handle(events: list[change_feed.Event]) -> None:
        await handle_events(db, events)

    return await change_feed.consume(db, CONSUMER, worker, handle, lease_s=lease_s)


async def _owner(db: AsyncDatabase[Document], doc: Document) -> Principal:
    """The transformation's owner, confined to their VO (catalogue.vos)."""
    return await confine_owner(db, transformations.owner_principal(doc))
