"""Making tasks: unused files are grouped (`productions.grouping`) into new tasks, or an mc
transformation gets its next tasks with no input. Runs under the transformation's lease.

Order, so that a crash loses nothing and assigns nothing twice: task numbers are reserved, the
tasks inserted (state created, their files listed), then their files marked assigned. A task
whose files were not marked yet (its creator died) is completed by `repair_assignments` before
any new grouping, so a file is never put in a second task. Tasks inserted after a clean (or a
delete) began are deleted by the pass that made them: the clean read the tasks before them.

A flushing transformation goes back to active once a pass made its incomplete groups from a
window that held every unused file, and only if no flush was asked since the pass read it
(`transformations.end_flush`): the files of a flush asked meanwhile may not be in its window.
"""

from __future__ import annotations

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document, bulk_write_chunked
from productions import locality, task_submission, tasks, transformation_files, transformations
from productions.feeding import group_key
from productions.grouping import Group, make_groups, needs_location, shared_metadata

WINDOW = 10_000
MC_BATCH = 500


def _env(doc: Document, number: int, group: Group) -> Document:
    return {**shared_metadata(group.files), **group.env, "transformation": doc["name"],
            "transformation_id": doc["_id"], "task": number}


async def repair_assignments(db: AsyncDatabase[Document], doc: Document) -> int:
    """Mark assigned the files of every created task not marked yet (idempotent; one bulk write,
    then the tasks are flagged `files_marked`)."""
    created = await tasks.tasks_in(db, doc["_id"], ["created"], WINDOW, files_marked=False)
    if not created:
        return 0
    # One guarded update per file by `_id` (the `_id` index on MongoDB and FerretDB alike; a long
    # `_id $in` scans on FerretDB), sent in bulk commands.
    at = tasks.now()
    ops = [UpdateOne({"_id": transformation_files.file_id(doc["_id"], lfn), "status": "unused"},
                     {"$set": {"status": "assigned", "task": t["_id"], "updated": at}})
           for t in created for lfn in t["files"]]
    marked = (await bulk_write_chunked(db[transformation_files.FILES], ops)).modified_count if ops else 0
    await tasks.mark_files_marked(db, [t["_id"] for t in created])
    return marked


def _room(doc: Document) -> int | None:
    limit = doc["spec"].get("max_tasks")
    return None if limit is None else max(0, int(limit) - int(doc.get("next_task", 0)))


async def create_tasks(db: AsyncDatabase[Document], doc: Document) -> int:
    """Make the tasks the transformation's unused files (or its mc quota) allow now (none once
    it stopped: a stop since the pass began gave their files back), and end the flush it was in
    (as read in `doc`) once its incomplete groups are made."""
    if not await task_submission.still_making(db, doc):
        return 0
    await repair_assignments(db, doc)
    made = await _finish_allocation(db, doc)
    room = _room(doc)
    if room == 0:
        await _flush_done(db, doc)  # no task can be made: nothing is left to flush
        return made
    whole = True
    if doc["spec"]["type"] == "mc":
        groups = [Group([]) for _ in range(min(room or MC_BATCH, MC_BATCH))]
    else:
        groups, whole = await _group_window(db, doc)
        if room is not None:
            groups = groups[:room]
    made += await _make(db, doc, groups)
    if whole:
        await _flush_done(db, doc)
    return made


async def _finish_allocation(db: AsyncDatabase[Document], doc: Document) -> int:
    """Store the tasks of the numbers an earlier pass reserved and did not store (it stopped in
    between): an mc transformation's are made here, or its quota (`max_tasks`, counted by
    `next_task`) would lose them for good; a processing one's files stayed unused, so they go to
    the new tasks and those numbers stay unused. How many tasks were made."""
    count = int(doc.get(transformations.ALLOCATING) or 0)
    if not count:
        return 0
    last = int(doc["next_task"])
    numbers = range(last - count + 1, last + 1)
    made = 0
    if doc["spec"]["type"] == "mc":
        stored = await tasks.states_of(db, [tasks.task_id(doc["_id"], n) for n in numbers])
        new = [tasks.document(doc["_id"], n, [], _env(doc, n, Group([]))) for n in numbers
               if tasks.task_id(doc["_id"], n) not in stored]
        made = await _store(db, doc, new)
    await transformations.allocation_done(db, doc["_id"], count, last)
    return made


async def _make(db: AsyncDatabase[Document], doc: Document, groups: list[Group]) -> int:
    """Store the tasks of these groups and mark their files assigned; how many were made."""
    if not groups:
        return 0
    first = await transformations.allocate_tasks(db, doc["_id"], len(groups))
    new = [tasks.document(doc["_id"], first + i, [f["lfn"] for f in g.files], _env(doc, first + i, g))
           for i, g in enumerate(groups)]
    made = await _store(db, doc, new)
    await transformations.allocation_done(db, doc["_id"], len(groups), first + len(groups) - 1)
    return made


async def _store(db: AsyncDatabase[Document], doc: Document, new: list[Document]) -> int:
    """Insert new tasks and mark their files assigned; how many (none once the transformation
    was cleaned meanwhile: the clean read the tasks before them, so they are deleted here)."""
    if not new:
        return 0
    await tasks.insert(db, new)
    if await transformations.cleaned_or_gone(db, doc["_id"]):  # after the clean's look: nobody else deletes them
        await tasks.delete(db, [t["_id"] for t in new])
        return 0
    await repair_assignments(db, doc)
    return len(new)


async def _group_window(db: AsyncDatabase[Document], doc: Document) -> tuple[list[Group], bool]:
    """The groups the next window of unused files makes (tagged with their location first when
    the plugin groups by it), and whether the window held every unused file (a flush makes the
    incomplete groups of such a window only)."""
    window = [f async for f in transformation_files.unused_files(db, doc["_id"], WINDOW,
                                                                 grouped=group_key(doc) is not None)]
    final = doc["state"] == "flushing" and len(window) < WINDOW
    grouping = doc["spec"]["grouping"]
    taken = None
    if window and needs_location(grouping):
        await locality.tag(db, doc, window)
        if grouping["plugin"] == "share":
            taken = await tasks.files_by_site(db, doc["_id"])
    groups = make_groups(window, grouping, final=final, replication=doc["spec"]["type"] == "replication",
                         taken=taken)
    return groups, len(window) < WINDOW


async def _flush_done(db: AsyncDatabase[Document], doc: Document) -> None:
    """A flushing transformation returns to active once a creation pass made its incomplete
    groups, unless a flush was asked since `doc` was read (`transformations.end_flush`)."""
    if doc["state"] == "flushing":
        await transformations.end_flush(db, doc)
