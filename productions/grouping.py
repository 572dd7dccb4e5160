"""Grouping plugins: how a window of unused files (in group-value then LFN order) becomes the
input lists of new tasks. A group that is not full yet is left for later unless `final` (a
flush, with every unused file in the window).

Plugins: `count` (files per task), `size` (input bytes per task), `meta` (files sharing a
metadata value), and two that look at where the files are (`productions.locality` tags each
file with `ses`, the SEs holding an available replica, `sites`, their sites, and for a
replication `targets`, the expression's SEs that do not hold it yet):

- `broadcast`: files are grouped by their SEs, so each task reads from one set of SEs (a
  processing or removal task) or copies to one set of target SEs (a replication: every SE of
  the expression that lacks the file, not just `copies` of them). The task's env holds `ses`
  or `target_ses`. A file held nowhere cannot be read, so it waits.
- `share`: files are divided among sites in proportion to `shares`, counting the files earlier
  tasks took. A file goes to the share site furthest below its share among those that hold it
  (locality); a processing task's job is then narrowed to that site (env `site`). A file no
  share site holds waits (its job could run nowhere under the shares) unless the
  transformation is a replication, which makes the copy at the site furthest below its share.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from kernel.db import Document


@dataclass
class Group:
    """The input files of one new task and what the plugin adds to its env."""

    files: list[Document]
    env: dict[str, Any] = field(default_factory=dict)


def _by_count(files: Sequence[Document], count: int, final: bool) -> Iterator[list[Document]]:
    for start in range(0, len(files), count):
        chunk = list(files[start:start + count])
        if len(chunk) == count or final:
            yield chunk


def _by_size(files: Sequence[Document], limit: int, final: bool) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    total = 0
    for f in files:
        chunk.append(f)
        total += int(f.get("size") or 0)
        if total >= limit:
            yield chunk
            chunk, total = [], 0
    if chunk and final:
        yield chunk


def _by_value(files: Sequence[Document], count: int, final: bool) -> Iterator[list[Document]]:
    for value, members in groupby(files, key=lambda f: f.get("group_value")):
        if value is None:
            continue  # files without the key cannot be grouped by it: they stay unused
        yield from _by_count(list(members), count, final)


def _by_location(files: Sequence[Document], count: int, final: bool, replication: bool) -> Iterator[Group]:
    name = "target_ses" if replication else "ses"

    def key(f: Document) -> tuple[str, ...]:
        return tuple(sorted(f["targets"] if replication else f["ses"]))

    usable = [f for f in files if replication or f["ses"]]
    for ses, members in groupby(sorted(usable, key=key), key=key):
        for chunk in _by_count(list(members), count, final):
            yield Group(chunk, {name: list(ses)})


def _furthest_below(candidates: Sequence[str], shares: Mapping[str, float], taken: Mapping[str, int]) -> str:
    """The candidate site whose share of the files taken so far lags its share the most."""
    total = sum(shares.values())
    after = sum(taken.values()) + 1
    return max(sorted(candidates), key=lambda s: shares[s] / total * after - taken.get(s, 0))


def _by_share(files: Sequence[Document], count: int, final: bool, shares: Mapping[str, float],
              taken: Mapping[str, int], replication: bool) -> Iterator[Group]:
    counts = dict(taken)
    by_site: dict[str, list[Document]] = {}
    for f in files:
        candidates = [s for s in f["sites"] if s in shares] or (list(shares) if replication else [])
        if not candidates:
            continue
        site = _furthest_below(candidates, shares, counts)
        counts[site] = counts.get(site, 0) + 1
        by_site.setdefault(site, []).append(f)
    for site in sorted(by_site):
        for chunk in _by_count(by_site[site], count, final):
            yield Group(chunk, {"site": site})


def make_groups(files: Sequence[Document], grouping: dict[str, Any], *, final: bool, replication: bool = False,
                taken: Mapping[str, int] | None = None) -> list[Group]:
    """The tasks' input groups for these files under the transformation's grouping (`taken`:
    files earlier tasks took per site, for `share`)."""
    plugin = grouping.get("plugin", "count")
    count = int(grouping.get("count", 1))
    if plugin == "broadcast":
        return list(_by_location(files, count, final, replication))
    if plugin == "share":
        return list(_by_share(files, count, final, grouping["shares"], taken or {}, replication))
    if plugin == "size":
        chunks = _by_size(files, int(grouping["bytes"]), final)
    elif plugin == "meta":
        chunks = _by_value(files, count, final)
    else:
        chunks = _by_count(files, count, final)
    return [Group(chunk) for chunk in chunks]


def needs_location(grouping: dict[str, Any]) -> bool:
    """Does the plugin group by where the files are (`productions.locality` must tag them)?"""
    return grouping.get("plugin") in ("broadcast", "share")


def shared_metadata(files: Sequence[Document]) -> dict[str, Any]:
    """The metadata values every file of a task shares (the template's `%(key)s` placeholders)."""
    if not files:
        return {}
    common = {k: v for k, v in (files[0].get("meta") or {}).items() if isinstance(v, str | int | float)}
    for f in files[1:]:
        meta = f.get("meta") or {}
        common = {k: v for k, v in common.items() if meta.get(k) == v}
    return common
