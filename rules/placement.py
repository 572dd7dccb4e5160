"""Where a rule's files go: which SEs of its expression get a lock for each file of a group.

SEs are ranked per group (every file of the DID for grouping ALL, of one dataset for DATASET,
one file for NONE), best first, by
1. the locks the rule already has there for the group (new files follow the old ones),
2. the group's files already available there (no transfer needed),
3. the rule's weight attribute (larger first), then free space (larger first),
4. the SE name (deterministic).
Each file then takes the best SEs it is not locked on yet, skipping an SE switched off for
writing (unless the file is there already) or where the account's quota has no room left.
A file with more locks than copies (copies lowered, content gone) releases the worst ones:
stuck before replicating before ok, then by rank.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernel.db import Document

STATE_ORDER = {"ok": 0, "replicating": 1, "stuck": 2}


@dataclass
class Placement:
    """What one group needs: new locks `(lfn, se, size, already_there)`, locks to release, and
    files that found too few SEs."""

    new: list[tuple[str, str, int, bool]] = field(default_factory=list)
    release: list[Document] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def free_bytes(se: Mapping[str, Any]) -> int:
    space = se.get("space") or {}
    total, used = space.get("total_bytes"), space.get("used_bytes")
    return int(total) - int(used or 0) if total else 0


def rank(ses: Sequence[Mapping[str, Any]], files: Sequence[tuple[str, int]], locks: Mapping[str, list[Document]],
         replicas: Mapping[str, Collection[str]], weight: str | None) -> list[str]:
    """The SE names of `ses` ranked for a group of files (see the module docstring)."""
    locked = Counter(lock["se"] for lfn, _ in files for lock in locks.get(lfn, ()))
    present = Counter(se for lfn, _ in files for se in replicas.get(lfn, ()))

    def key(se: Mapping[str, Any]) -> tuple[int, int, float, int, str]:
        name = se["name"]
        attr = (se.get("attributes") or {}).get(weight) if weight else None
        return (-locked[name], -present[name], -_number(attr), -free_bytes(se), name)

    return [se["name"] for se in sorted(ses, key=key)]


def place_group(
    ses: Sequence[Mapping[str, Any]], files: Sequence[tuple[str, int]], copies: int,
    locks: Mapping[str, list[Document]], replicas: Mapping[str, Collection[str]], room: dict[str, int | None],
    weight: str | None, ranked: list[str] | None = None,
) -> Placement:
    """Decide new locks and releases for files of one group (`ranked` for the whole group when
    the files are a part of it). `room` (bytes left per SE, None = no quota) is decreased by
    what is placed, so later files see it."""
    ranked = ranked if ranked is not None else rank(ses, files, locks, replicas, weight)
    order = {name: i for i, name in enumerate(ranked)}
    writable = {se["name"] for se in ses if se.get("write_enabled", True)}
    out = Placement()
    for lfn, size in files:
        mine = sorted(locks.get(lfn, ()),
                      key=lambda lk: (STATE_ORDER.get(lk["state"], 3), order.get(lk["se"], 1 << 30)))
        if len(mine) > copies:
            out.release.extend(mine[copies:])
            continue
        taken = {lock["se"] for lock in mine}
        needed = copies - len(mine)
        there = replicas.get(lfn, ())
        for name in ranked:
            if needed == 0:
                break
            if name in taken or (name not in writable and name not in there):
                continue
            left = room.get(name)
            if left is not None and left < size:
                continue
            if left is not None:
                room[name] = left - size
            out.new.append((lfn, name, size, name in there))
            needed -= 1
        if needed:
            out.unplaced.append(lfn)
    return out
