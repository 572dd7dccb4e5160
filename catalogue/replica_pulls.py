"""Taking replicas off their files: one guarded update per file, each counted once on its SE.

A pull pins the elements it takes at their positions as read and carries its call's token
(`catalogue.replica_writers`), so calls racing on the same replicas count each one once; a
retired replica the reaper is removing goes the reaper's way (`catalogue.replica_removal`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed, usage_intents
from catalogue.collection_names import FILES
from catalogue.directories import find_by_ids, now
from catalogue.replica_removal import REMOVAL, remove_retired
from catalogue.replica_writers import REMOVED, REPLICA_WRITERS, new_token, write_round, writer_field
from catalogue.writer_tokens import WRITER
from kernel.db import Document, increment

PULL_ROUNDS = 5  # rounds of a replica pull that keeps losing races before it leaves the rest listed
PULL_FIELDS = {"replicas": 1, "size": 1, REPLICA_WRITERS: 1}  # what a pull reads
HELD_STATUSES = ("copying", "unavailable")  # what an upload's undo takes off (`held_by`)


async def pull_replicas(db: AsyncDatabase[Document], targets: Iterable[tuple[str, str]], *,
                        status: str | None = None, held_by: str | None = None) -> set[str]:
    """Take the replicas `(lfn, se)` off their files and off their SEs' usage, one update per file
    in one bulk write (and one usage write); with `status`, only a replica in that status now (a
    retired replica being deleted, an unfinished copy being discarded); with `held_by` (an
    upload's writer digest, `catalogue.upload_leases`), only a replica that writer still holds,
    `copying` or `unavailable` (its undo: not one a transfer or another upload took over since).
    Returns the LFNs whose file exists.

    Each update pins the elements it pulls at their positions as read (FerretDB has no `$pull` by
    condition) and carries the call's token (`catalogue.replica_writers`): a round that partly
    missed (a file changed meanwhile) reads the files back, counts the replicas its token took,
    and tries the others again on what it read. A retired replica the reaper is removing (it
    carries a removal token) goes the reaper's way (`remove_retired`), which its SE's usage
    counts by that token: the two racing take it off once."""
    wanted: dict[str, set[str]] = {}
    for lfn, se in targets:
        wanted.setdefault(lfn, set()).add(se)
    found = await find_by_ids(db[FILES], wanted, PULL_FIELDS)
    existing = set(found)
    token = new_token()
    noted: usage_intents.Records = {}  # the SE records noting this call (`usage_intents`), at its first write
    counts: dict[str, list[int]] = {}
    gone: list[tuple[str, str]] = []
    retired: set[tuple[str, str]] = set()
    for _ in range(PULL_ROUNDS):
        plans: dict[str, list[tuple[int, Document]]] = {}
        for lfn, doc in found.items():
            for index, replica in enumerate(doc.get("replicas", [])):
                if replica["se"] not in wanted.get(lfn, ()) or status not in (None, replica.get("status")):
                    continue
                if held_by is not None and (replica.get(WRITER) != held_by
                                            or replica.get("status") not in HELD_STATUSES):
                    continue  # as read, pinned below: a take-over since makes the pull miss
                if replica.get(REMOVAL) and replica.get("status") == "unavailable":
                    retired.add((lfn, replica["se"]))  # the reaper's (below)
                    wanted[lfn].discard(replica["se"])
                else:
                    plans.setdefault(lfn, []).append((index, replica))
        if not plans:
            break
        if not noted:
            noted = await usage_intents.intend(db, token, -1, ((lfn, se) for lfn, ses in wanted.items() for se in ses))
        at = now()
        updates = [UpdateOne({"_id": lfn, **{f"replicas.{i}": r for i, r in hits}},
                             {"$pullAll": {"replicas": [r for _, r in hits]},
                              "$set": {"modified": at, **{writer_field(r["se"], REMOVED): token for _, r in hits}},
                              **increment({"version": 1})})
                   for lfn, hits in plans.items()]
        attempted = [(lfn, r["se"]) for lfn, hits in plans.items() for _, r in hits]
        sizes = {lfn: int(found[lfn].get("size", 0)) for lfn in plans}
        mine, reread = await write_round(db[FILES], updates, attempted, REMOVED, token, plans, PULL_FIELDS)
        found = found if reread is None else reread
        for lfn, se in mine:
            usage_intents.tally(counts, se, -1, sizes[lfn])
            wanted[lfn].discard(se)
        gone.extend(mine)
        if len(mine) == len(attempted):
            break
    if noted:
        await usage_intents.settle(db, token, noted, counts)
    await change_feed.append(db, [change_feed.event("replica_removed", lfn, se=se) for lfn, se in gone])
    if retired:
        await remove_retired(db, sorted(retired))
    return existing

