"""Choosing where a transfer reads from: every usable replica, best first.

A replica can be a source when it is `available` and its SE is switched on for reading. Among
those, the order is: the SE the request insists on (if any) only; disk before tape (tape needs
staging first); replicas this request has not failed on yet; a link that allows third-party copy
with the destination before one that must stream through the worker; the same site as the
destination; then the SE name, so the choice is stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from catalogue.storage_elements import StorageElement
from catalogue.storage_paths import storage_lfn

TPC_FAMILIES = {"root": "root", "davs": "http", "https": "http", "dav": "http", "http": "http", "s3": "s3"}


@dataclass(frozen=True)
class Source:
    se: StorageElement
    url: str
    path: str  # the LFN its URLs derive from (`catalogue.storage_paths.storage_lfn`)

    @property
    def on_tape(self) -> bool:
        return self.se.kind == "tape"


def tpc_family(se: StorageElement, operation: str) -> set[str]:
    """The third-party-copy protocol families an SE offers for reading or writing."""
    return {
        TPC_FAMILIES[p.scheme] for p in se.protocols
        if p.third_party_copy and getattr(p, operation) and p.scheme in TPC_FAMILIES
    }


def can_tpc(source: StorageElement, dest: StorageElement) -> bool:
    return bool(tpc_family(source, "read") & tpc_family(dest, "write"))


def rank_sources(
    file_doc: Mapping[str, Any],
    ses: Mapping[str, StorageElement],
    dest: StorageElement,
    *,
    only_se: str | None = None,
    failed_on: Sequence[str] = (),
) -> list[Source]:
    """Usable source replicas of a file for a transfer to dest, best first."""
    candidates: list[tuple[tuple[Any, ...], Source]] = []
    for replica in file_doc.get("replicas", []):
        se = ses.get(replica.get("se", ""))
        if se is None or se.name == dest.name or replica.get("status") != "available" or not se.read_enabled:
            continue
        if only_se is not None and se.name != only_se:
            continue
        key = (
            se.kind == "tape",
            se.name in failed_on,
            not can_tpc(se, dest),
            se.site != dest.site,
            se.name,
        )
        candidates.append((key, Source(se, replica["url"], storage_lfn(str(file_doc.get("_id", "")), replica))))
    candidates.sort(key=lambda pair: pair[0])
    return [source for _, source in candidates]
