"""Grouping plugins: how a window of unused files (in group-value then LFN order) becomes the
input lists of new tasks. A group that is not full yet is left for later unless `final` (a
flush, with every unused file in the window)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import Any

from kernel.db import Document


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


def make_groups(files: Sequence[Document], grouping: dict[str, Any], *, final: bool) -> list[list[Document]]:
    """The tasks' input lists for these files under the transformation's grouping."""
    plugin = grouping.get("plugin", "count")
    if plugin == "size":
        return list(_by_size(files, int(grouping["bytes"]), final))
    if plugin == "meta":
        return list(_by_value(files, int(grouping["count"]), final))
    return list(_by_count(files, int(grouping["count"]), final))


def shared_metadata(files: Sequence[Document]) -> dict[str, Any]:
    """The metadata values every file of a task shares (the template's `%(key)s` placeholders)."""
    if not files:
        return {}
    common = {k: v for k, v in (files[0].get("meta") or {}).items() if isinstance(v, str | int | float)}
    for f in files[1:]:
        meta = f.get("meta") or {}
        common = {k: v for k, v in common.items() if meta.get(k) == v}
    return common
