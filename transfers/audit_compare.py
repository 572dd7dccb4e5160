"""Comparing an SE's storage with its catalogue replicas: two streams sorted by LFN, merged.

The storage side is the SE's own listing (`StoragePlugin.walk`, through `transfers.endpoints`) or
a dump file the site writes on the SE. Memory stays flat in the number of entries: the walk
holds a directory per level, the catalogue side a page, and an unsorted dump is sorted in runs
of `DUMP_RUN` lines spilled to temporary files and merged.

Dump format: one file per line, its path on the SE relative to the SE's protocol prefix (which
is its LFN, e.g. `/vo/data/run1/f.root`), optionally followed by whitespace and its size in
bytes. Empty lines and lines starting with `#` are skipped. The dump's own modification time is
the moment it describes: files registered after it are not called lost, and a file in it is
dark only once the dump is older than the grace period (a write in flight when the dump was
taken has been registered by then).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from catalogue.replica_health import EXPECTED_ON_STORAGE, CatalogueReplica
from catalogue.replica_urls import normalised_url
from kernel.errors import InvalidInput

DUMP_RUN = 50_000
LFN_MAX = 4096


@dataclass(frozen=True)
class StorageEntry:
    """One file on storage: its LFN, and its size and modification time when known."""

    lfn: str
    size: int | None
    mtime: float | None


@dataclass
class Findings:
    """What one comparison found, as counters (the entries go to `on_entries`)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("storage", "catalogue", "matched", "lost", "dark", "young", "size_mismatch", "copying", "already_lost"), 0))


def lfn_of(url: str, base: str) -> str | None:
    """The LFN a storage URL stands for under an SE's base URL, or None if it is not a plain LFN."""
    try:
        inner, outer = normalised_url(url), normalised_url(base).rstrip("/")
    except InvalidInput:
        return None
    return inner[len(outer):] if inner.startswith(outer + "/") else None


def parse_dump_line(line: str, number: int) -> tuple[str, int | None] | None:
    """A dump line as (path, size or None); None for blank and comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    path, _, rest = text.partition("\t") if "\t" in text else text.rpartition(" ") if " " in text else (text, "", "")
    path, rest = path.strip(), rest.strip()
    if rest and not rest.isdigit():
        path, rest = text, ""  # a path with a space and no size
    if not path.startswith("/") or len(path) > LFN_MAX:
        raise InvalidInput(f"dump line {number}: a path must be absolute (relative to the SE's prefix): {text[:200]!r}")
    return path, int(rest) if rest else None


def _spill(lines: list[str]) -> str:
    lines.sort()
    handle = tempfile.NamedTemporaryFile("w", delete=False, suffix=".dump-run", encoding="utf-8")  # noqa: SIM115
    with handle:
        handle.writelines(f"{line}\n" for line in lines)
    return handle.name


def _read_run(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n")


@contextlib.contextmanager
def sorted_runs(paths: list[str]) -> Iterator[Iterator[str]]:
    """The merged lines of sorted run files, removed afterwards."""
    try:
        yield heapq.merge(*(_read_run(p) for p in paths))
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


async def sorted_dump(lines: AsyncIterator[str], mtime: float | None) -> AsyncIterator[StorageEntry]:
    """A dump's entries in LFN order, sorted externally (runs of DUMP_RUN lines)."""
    runs: list[str] = []
    pending: list[str] = []
    number = 0
    async for line in lines:
        number += 1
        parsed = parse_dump_line(line, number)
        if parsed is None:
            continue
        pending.append(f"{parsed[0]}\t{'' if parsed[1] is None else parsed[1]}")
        if len(pending) >= DUMP_RUN:
            runs.append(_spill(pending))
            pending = []
    if pending:
        runs.append(_spill(pending))
    with sorted_runs(runs) as merged:
        previous = None
        for row in merged:
            path, _, size = row.rpartition("\t")
            if path != previous:
                yield StorageEntry(path, int(size) if size else None, mtime)
            previous = path


async def dump_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Lines of a byte stream (UTF-8)."""
    rest = b""
    async for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if rest:
        yield rest.decode("utf-8", errors="replace")


async def _next(stream: AsyncIterator[Any]) -> Any:
    return await anext(stream, None)


async def compare(
    storage: AsyncIterator[StorageEntry], catalogue: AsyncIterator[CatalogueReplica], *,
    as_of: float, grace_s: float, on_entry: Callable[[dict[str, Any]], Awaitable[None]],
    found: Findings | None = None, now: float | None = None,
) -> Findings:
    """Merge both sorted streams. `as_of` (epoch seconds) is when the storage side was taken:
    replicas created after it are not lost. A file on storage is dark once it has been there
    unregistered for `grace_s` (its modification time, or a dump's, before `now`).
    The counters are kept in `found` as they grow (a caller may publish them meanwhile)."""
    found = found or Findings()
    now = time.time() if now is None else now
    counts = found.counts
    st, cat = await _next(storage), await _next(catalogue)
    while st is not None or cat is not None:
        if cat is None or (st is not None and st.lfn < cat.lfn):
            counts["storage"] += 1
            if st.mtime is not None and now - st.mtime < grace_s:
                counts["young"] += 1
            else:
                counts["dark"] += 1
                await on_entry({"kind": "dark", "lfn": st.lfn, "storage_size": st.size})
            st = await _next(storage)
            continue
        counts["catalogue"] += 1
        if st is None or cat.lfn < st.lfn:
            created = cat.created.timestamp() if hasattr(cat.created, "timestamp") else None
            if cat.status == "lost":
                counts["already_lost"] += 1
            elif cat.status not in EXPECTED_ON_STORAGE or (created is not None and created > as_of):
                counts["copying"] += 1
            else:
                counts["lost"] += 1
                await on_entry({"kind": "lost", "lfn": cat.lfn, "size": cat.size, "status": cat.status})
            cat = await _next(catalogue)
            continue
        counts["storage"] += 1
        counts["matched"] += 1
        if st.size is not None and cat.status in EXPECTED_ON_STORAGE and st.size != cat.size:
            counts["size_mismatch"] += 1
            await on_entry({"kind": "size_mismatch", "lfn": cat.lfn, "size": cat.size, "storage_size": st.size})
        st, cat = await _next(storage), await _next(catalogue)
    return found
