"""The job layer's counters recounted from what they count: drift reported, and mended.

Two counters steer matching, each moved by a write of its own after the write it counts:
- a task queue's `waiting` (`task_queues`), after its entries' push or pop: a queue counted 0
  with entries is offered to no pilot, and its jobs wait until the count is mended;
- a group's `running` (`task_queues.add_running`), after a job's move to or from a pilot: a
  group counted as holding pilots it does not hold is held back in the fair share.
A call cut between the two writes (its process killed, the database gone between them) leaves
the counter off for good. Here the truth is recounted: a queue's entries, and the jobs at pilots
(matched, running) per group, read state by state from jobs_by_state_heartbeat (the cost is the
jobs at pilots, not the history) and merged by id, so a job that starts between the two reads is
counted once.

- `rebuild` (administrators: `POST /job-counters/rebuild`, `cairn job rebuild-counters`) reports
  every counter that differs and, unless a dry run, sets it, each only where it still holds what
  was read (`kernel.recount`; one that moved meanwhile is reported under `moved`, for another
  run). A move whose counter write is still on its way can leave new drift behind: run it again.
- `QuietMender` (the job watchdog) mends on its own what it found drifted alike (the same stored
  value, the same recount) in two looks at least `WmsSettings.counter_mend_s` apart: a counter
  write still on its way would have had to wait that long.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel import recount as recount_records
from kernel.db import Document, database_errors, find_in_turn
from wms import states
from wms.jobs import JOBS
from wms.task_queues import GROUP_USAGE, QUEUE_ENTRIES, TASK_QUEUES, group_vo

# (collection, document id, field) of one counter; what counters hold (None: no such field or
# document) and what they should.
CounterKey = tuple[str, str, str]
Values = dict[CounterKey, int | None]
Truth = dict[CounterKey, int]


def counter_name(key: CounterKey) -> str:
    """`running:<group>` or `waiting:<queue id>`, as reports name a counter."""
    _, doc_id, name = key
    return f"{name}:{doc_id}"


async def recount(db: AsyncDatabase[Document]) -> Truth:
    """What every counter should hold, from the queues' entries and the jobs at pilots."""
    truth: Truth = {}
    with database_errors():
        definitions = await db[TASK_QUEUES].find({}, {"_id": 1}).to_list()
        entries = await db[QUEUE_ENTRIES].find({}, {"entries": 1}).to_list()
    lengths = {doc["_id"]: len(doc.get("entries") or []) for doc in entries}
    # A queue's entries without its definition (its enqueue cut before the definition's write) are
    # queued again by the watchdog's repair of unqueued jobs, which writes the definition.
    for queue in definitions:
        truth[(TASK_QUEUES, queue["_id"], "waiting")] = lengths.get(queue["_id"], 0)
    at_pilots = await find_in_turn(db[JOBS], ({"state": state} for state in states.AT_PILOT), {"group": 1})
    groups = Counter({job["_id"]: str(job.get("group")) for job in at_pilots}.values())
    with database_errors():
        known = await db[GROUP_USAGE].find({}, {"_id": 1}).to_list()
    for group in {doc["_id"] for doc in known} | set(groups):
        truth[(GROUP_USAGE, group, "running")] = groups.get(group, 0)
    return truth


async def stored(db: AsyncDatabase[Document]) -> Values:
    """What every counter holds now."""
    with database_errors():
        queues = await db[TASK_QUEUES].find({}, {"waiting": 1}).to_list()
        usage = await db[GROUP_USAGE].find({}, {"running": 1}).to_list()
    values: Values = {(TASK_QUEUES, q["_id"], "waiting"): _number(q.get("waiting")) for q in queues}
    values.update({(GROUP_USAGE, u["_id"], "running"): _number(u.get("running")) for u in usage})
    return values


def _number(value: Any) -> int | None:
    return None if value is None else int(value)


def drifted(truth: Truth, held: Values) -> dict[CounterKey, tuple[int | None, int]]:
    """The counters whose stored value differs from the recount: {key: (stored, recounted)}."""
    return {key: (held.get(key), want) for key, want in truth.items() if held.get(key) != want}


async def set_if_unmoved(db: AsyncDatabase[Document], key: CounterKey, was: int | None, value: int, *,
                         found: bool = True) -> bool:
    """Set the counter to value where it still holds `was` (None: no such field); `found` False:
    its document was not there (a group's first job at a pilot never made one). False if it moved."""
    collection, doc_id, name = key
    return await recount_records.set_if_unmoved(
        db[collection], doc_id, {name: was} if was is not None else {} if found else None, {name: value},
        fields=[name], insert={"share": 1.0} if collection == GROUP_USAGE else None)


async def rebuild(db: AsyncDatabase[Document], *, fix: bool = True) -> dict[str, Any]:
    """Recount every counter, report those that drifted and, with `fix`, set them (see the module)."""
    held = await stored(db)
    truth = await recount(db)
    drift = drifted(truth, held)
    moved = [counter_name(key) for key, (was, want) in drift.items()
             if fix and not await set_if_unmoved(db, key, was, want, found=key in held)]
    return {
        "checked": len(truth), "drifted": len(drift), "fixed": fix, "moved": moved,
        "drift": {counter_name(key): {"vo": group_vo(key[1]) if key[0] == GROUP_USAGE else None,
                                      "stored": was, "recounted": want}
                  for key, (was, want) in sorted(drift.items())},
    }


@dataclass
class QuietMender:
    """Mends what drifted alike in two looks `interval_s` apart (see the module); one per watchdog."""

    interval_s: float
    last_look: float | None = None
    seen: dict[CounterKey, tuple[int | None, int]] = field(default_factory=dict)

    async def look(self, db: AsyncDatabase[Document]) -> list[str]:
        """Look if one is due: mend what drifted alike since the last look; the counters mended."""
        now = time.monotonic()
        if self.last_look is not None and now - self.last_look < self.interval_s:
            return []
        held = await stored(db)
        drift = drifted(await recount(db), held)
        steady = {key: values for key, values in drift.items() if self.seen.get(key) == values}
        mended = [counter_name(key) for key, (was, want) in steady.items()
                  if await set_if_unmoved(db, key, was, want, found=key in held)]
        self.seen = {key: values for key, values in drift.items() if key not in steady}
        self.last_look = now
        return mended
