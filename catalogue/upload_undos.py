"""The undo of a failed upload in the catalogue: its replicas go only while that upload still
holds them (`catalogue.upload_leases`: its `writer`, `copying` or `unavailable`), so an undo
that stalled (its process held up longer than the lease) removes nothing a transfer or another
upload took over meanwhile. A record the upload founded (`writer_tokens.FOUNDING`) whose only
replica is that one goes with it in one guarded delete (`catalogue.file_removal`), so an undo
cut short leaves either both or neither, never an empty record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directories import fetch_directories
from catalogue.file_models import Outcome
from catalogue.file_removal import founding_only, remove_records
from catalogue.files import fetch_files
from catalogue.lfn import ancestors
from catalogue.permissions import removal_denial
from catalogue.replica_pulls import pull_replicas
from catalogue.writer_tokens import NOT_HELD, WRITER
from kernel.db import Document
from kernel.principal import Principal


async def undo_held_replicas(db: AsyncDatabase[Document], principal: Principal, writer: str, se: str,
                             files: Mapping[str, Document]) -> Outcome:
    """Remove the replicas on se of `files` (records as read, w checked) that upload `writer` (a
    digest) still holds, each with its record when it founded it and is its only replica.
    Answers `{lfn: {"record_removed": bool}}`, or why a replica was left (not held any more)."""
    lfns = list(files)
    founded = [lfn for lfn, doc in files.items() if founding_only(doc, se, writer)]
    dirs = await fetch_directories(db, {a for lfn in founded for a in ancestors(lfn)}) if founded else {}
    founded = [lfn for lfn in founded if removal_denial(principal, lfn, dirs) is None]
    removed, _ = await remove_records(db, founded, force=False, held=(se, writer)) if founded else (set(), {})
    rest = [lfn for lfn in lfns if lfn not in removed]
    if rest:
        await pull_replicas(db, [(lfn, se) for lfn in rest], held_by=writer)
    left = await fetch_files(db, rest, {"replicas": 1}) if rest else {}
    successful: dict[str, Any] = {lfn: {"record_removed": True} for lfn in removed}
    failed: dict[str, Any] = {}
    for lfn in rest:
        replica = _replica_on((left.get(lfn) or {}).get("replicas", []), se)
        if replica is None:
            successful[lfn] = {"record_removed": lfn not in left}
        else:
            held = replica.get(WRITER) == writer
            failed[lfn] = (f"replica of {lfn} on {se} changed meanwhile; try again" if held else
                           f"replica of {lfn} on {se} is not this upload's any more: {NOT_HELD}")
    return {"successful": successful, "failed": failed}


def _replica_on(replicas: Sequence[Mapping[str, Any]], se: str) -> Mapping[str, Any] | None:
    return next((r for r in replicas if r.get("se") == se), None)
