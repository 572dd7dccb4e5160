"""The path a replica's bytes lie at on its SE: the LFN it was written under.

A move renames a file in the catalogue only (`catalogue.moved_paths`); each replica of a moved file
keeps that LFN as `path_lfn`, and everything that reads, copies from, stages, checks or deletes
the replica derives its URLs from `storage_lfn`, not from the file's LFN. No database here: the
clients (`cairn upload`/`download`, the pilot) import it, and their start is part of their speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PATH_LFN = "path_lfn"


def storage_lfn(lfn: str, replica: Mapping[str, Any]) -> str:
    """The LFN whose URLs on the replica's SE hold its bytes: the one it was written under."""
    return str(replica.get(PATH_LFN) or lfn)


def moved_replicas(replicas: Sequence[Mapping[str, Any]], old: str, new: str) -> list[dict[str, Any]]:
    """The replicas of the file at `old` as they are once it is at `new`: each keeps its path."""
    out = []
    for replica in replicas:
        moved = {**replica, PATH_LFN: storage_lfn(old, replica)}
        if moved[PATH_LFN] == new:  # moved back where its bytes are
            del moved[PATH_LFN]
        out.append(moved)
    return out
