"""Deleting dark data: files on an SE that no replica in the catalogue stands for.

The reaper deletes one only when an operator asked for the dark files of a finished audit run
(`audit_runs.allow_cleaning`), the file is still without a replica on that SE (nor holds a
moved file's bytes, `catalogue.moved_paths`), and it did not
change on storage since the run began (a new write of the same name is not dark), and only
while the reaper surely holds the request's lease (`kernel.lease.check_held`: else LeaseLost, its
successor has the request). The URL comes from `transfers.endpoints`, so nothing outside the SE is
ever deleted.
"""

from __future__ import annotations

from collections.abc import Mapping

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files
from catalogue.moved_paths import held_on
from catalogue.replica_urls import VARIANT_MARK
from catalogue.storage_elements import StorageElement
from kernel import lease
from kernel.db import Document
from kernel.errors import NotFound
from storage_plugins.registry import plugin_for
from transfers import audit_runs
from transfers.audit_variants import registered_tags
from transfers.endpoints import endpoints


class StillInUse(Exception):
    """The file is no longer dark (registered, rewritten) or its deletion was not asked for."""


async def delete_dark(db: AsyncDatabase[Document], run_id: str, lfn: str, se: StorageElement,
                      credentials: Mapping[str, Mapping[str, str]]) -> bool:
    """Delete the dark file lfn from se; True if it was there. Raises StillInUse when it must stay."""
    if await audit_runs.cleanable(db, run_id, se.name, lfn) is None:
        raise StillInUse(f"{lfn} on {se.name}: not a dark file whose deletion was asked for in run {run_id}")
    known = await fetch_files(db, [lfn], {"replicas.se": 1})
    # A URL variant (`LFN!tag`) is the bytes of LFN's replica once one is registered there.
    base, mark, tag = lfn.partition(VARIANT_MARK)
    if any(r.get("se") == se.name for r in known.get(lfn, {}).get("replicas", [])) or (
            mark and (await registered_tags(db, se, [base])).get(base) == tag):
        await audit_runs.cleaned(db, run_id, lfn, "kept: registered since")
        raise StillInUse(f"{lfn} on {se.name}: a replica is registered now; it is not dark any more")
    if {lfn, base} & await held_on(db, se.name, [lfn, base]):
        await audit_runs.cleaned(db, run_id, lfn, "kept: a moved file's bytes")
        raise StillInUse(f"{lfn} on {se.name}: the bytes of a file moved to another LFN; not dark")
    run = await audit_runs.get_run(db, run_id)
    endpoint = endpoints(se, lfn, "delete", credentials=credentials)[0]
    # The process's shared plugin: not closed here, others are using it (`close_plugins`).
    plugin = plugin_for(endpoint.url, endpoint.options)
    try:
        info = await plugin.stat(endpoint.url)
        if info.mtime is not None and run.get("started") and info.mtime > run["started"].timestamp():
            await audit_runs.cleaned(db, run_id, lfn, "kept: written since the run")
            raise StillInUse(f"{lfn} on {se.name}: written again since audit run {run_id}")
        # Only while the request's lease is surely held: a reaper that stalled past it may find the
        # file deleted by its successor and another registered there, whose date (the storage's
        # clock, or one a copy kept) need not be later than the run's start.
        lease.check_held()
        await plugin.delete(endpoint.url)
    except NotFound:
        await audit_runs.cleaned(db, run_id, lfn, "gone")
        return False
    await audit_runs.cleaned(db, run_id, lfn, "deleted")
    return True
