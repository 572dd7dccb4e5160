"""Comparing an SE's storage with its catalogue replicas: two streams sorted by LFN, merged.

A replica whose size, or adler32, on storage differs from its file's in the catalogue is a
`size_mismatch` or a `checksum_mismatch` (the size is compared first; one entry per replica).
Storage checksums come from a dump's third column, or on a live listing from `checksum_of`
(the auditor passes one when `audit.checksums` is set and the SE answers checksums itself).

The storage side is the SE's own listing (`StoragePlugin.walk`, through `transfers.endpoints`) or
a dump file the site writes on the SE. Memory stays flat in the number of entries: the walk
holds a directory per level, the catalogue side a page, and an unsorted dump is sorted in runs
of `DUMP_RUN` lines spilled to temporary files and merged.

Dump format: one file per line, its path on the SE relative to the SE's protocol prefix (which
is its LFN, e.g. `/vo/data/run1/f.root`), optionally followed by whitespace and its size in
bytes, and optionally then by its adler32 (8 hex digits). Empty lines and lines starting with
`#` are skipped. The dump's own modification time is the moment it describes: files registered
after it are not called lost, and a file in it is dark only once the dump is older than the
grace period (a write in flight when the dump was taken has been registered by then).
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
HEX = frozenset("0123456789abcdef")
ChecksumOf = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class StorageEntry:
    """One file on storage: its LFN, and its size, modification time and adler32 when known."""

    lfn: str
    size: int | None
    mtime: float | None
    adler32: str | None = None


@dataclass
class Findings:
    """What one comparison found, as counters (the entries go to `on_entries`)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("storage", "catalogue", "matched", "lost", "dark", "young", "size_mismatch", "checksum_mismatch", "copying",
        "already_lost"), 0))


def lfn_of(url: str, base: str) -> str | None:
    """The LFN a storage URL stands for under an SE's base URL, or None if it is not a plain LFN."""
    try:
        inner, outer = normalised_url(url), normalised_url(base).rstrip("/")
    except InvalidInput:
        return None
    return inner[len(outer):] if inner.startswith(outer + "/") else None


def _adler32(text: str) -> str | None:
    value = text.lower()
    return value.zfill(8) if 0 < len(value) <= 8 and all(c in HEX for c in value) else None


def _columns(text: str) -> tuple[str, str, str]:
    """(path, size, adler32) of a dump line, the last two possibly empty. Tab-separated columns
    are taken as they are; otherwise trailing words are a size and an adler32 when they look so
    (a path may hold spaces)."""
    if "\t" in text:
        path, size, adler32, *_ = [*text.split("\t"), "", ""]
        return path, size, adler32
    words = text.rsplit(None, 2)
    if len(words) == 3 and words[1].isdigit() and _adler32(words[2]) is not None:
        return words[0], words[1], words[2]
    words = text.rsplit(None, 1)
    if len(words) == 2 and words[1].isdigit():
        return words[0], words[1], ""
    return text, "", ""


def parse_dump_line(line: str, number: int) -> tuple[str, int | None, str | None] | None:
    """A dump line as (path, size or None, adler32 or None); None for blank and comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    path, size, adler32 = (column.strip() for column in _columns(text))
    if not path.startswith("/") or len(path) > LFN_MAX:
        raise InvalidInput(f"dump line {number}: a path must be absolute (relative to the SE's prefix): {text[:200]!r}")
    if size and not size.isdigit():
        raise InvalidInput(f"dump line {number}: a size is a number of bytes, not {size!r}")
    checksum = _adler32(adler32) if adler32 else None
    if adler32 and checksum is None:
        raise InvalidInput(f"dump line {number}: an adler32 is up to 8 hex digits, not {adler32[:20]!r}")
    return path, int(size) if size else None, checksum


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
        path, size, adler32 = parsed
        pending.append(f"{path}\t{'' if size is None else size}\t{adler32 or ''}")
        if len(pending) >= DUMP_RUN:
            runs.append(_spill(pending))
            pending = []
    if pending:
        runs.append(_spill(pending))
        pending = []  # not held through the merge
    with sorted_runs(runs) as merged:
        previous = None
        for row in merged:
            path, length, checksum = row.rsplit("\t", 2)
            if path != previous:
                yield StorageEntry(path, int(length) if length else None, mtime, checksum or None)
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
    found: Findings | None = None, now: float | None = None, checksum_of: ChecksumOf | None = None,
) -> Findings:
    """Merge both sorted streams. `as_of` (epoch seconds) is when the storage side was taken:
    replicas created after it are not lost. A file on storage is dark once it has been there
    unregistered for `grace_s` (its modification time, or a dump's, before `now`).
    The counters are kept in `found` as they grow (a caller may publish them meanwhile).
    `checksum_of(lfn)` gives the storage's adler32 of a matched file the stream gave none for."""
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
        if cat.status in EXPECTED_ON_STORAGE:
            mismatch = await _mismatch(st, cat, checksum_of)
            if mismatch is not None:
                counts[mismatch["kind"]] += 1
                await on_entry(mismatch)
        st, cat = await _next(storage), await _next(catalogue)
    return found


async def _mismatch(st: StorageEntry, cat: CatalogueReplica, checksum_of: ChecksumOf | None) -> dict[str, Any] | None:
    """The entry for a matched replica whose size or adler32 on storage differs, else None."""
    entry = {"lfn": cat.lfn, "size": cat.size, "storage_size": st.size, "status": cat.status,
             "adler32": cat.adler32, "storage_adler32": st.adler32}
    if st.size is not None and st.size != cat.size:
        return {**entry, "kind": "size_mismatch"}
    if not cat.adler32:
        return None
    stored = st.adler32 if st.adler32 is not None or checksum_of is None else await checksum_of(cat.lfn)
    if stored is not None and stored.lower().zfill(8) != cat.adler32.lower().zfill(8):
        return {**entry, "storage_adler32": stored, "kind": "checksum_mismatch"}
    return None
