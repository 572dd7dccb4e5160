"""Which replica a reader (a download, `cairn://`, a job) should read first.

A replica can be read when it is `available` and its SE is switched on for reading. Among
those: replicas on an SE of the reader's own site first, disk before tape (tape answers only
after staging), then the SE name so the choice is stable. Replicas left out are reported
with the reason, so a caller can say why nothing was readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from catalogue.storage_elements import StorageElement
from catalogue.storage_paths import storage_lfn


@dataclass(frozen=True)
class ReadableReplica:
    """A replica worth trying: its SE and the URL it was registered with."""

    se: StorageElement
    url: str | None
    path: str  # the LFN its URLs derive from (`catalogue.storage_paths.storage_lfn`)


def replicas_to_read(
    lfn: str, replicas: list[Mapping[str, Any]], ses: Mapping[str, StorageElement], *, site: str | None = None
) -> tuple[list[ReadableReplica], dict[str, str]]:
    """The readable replicas of lfn best first, and `{se: why not}` for the others."""
    ranked: list[tuple[tuple[Any, ...], ReadableReplica]] = []
    skipped: dict[str, str] = {}
    for replica in replicas:
        name = str(replica.get("se", ""))
        se = ses.get(name)
        if se is None:
            skipped[name] = "unknown SE"
        elif replica.get("status") != "available":
            skipped[name] = f"replica is {replica.get('status')}"
        elif not se.read_enabled:
            skipped[name] = f"SE {name} is switched off for reading"
        else:
            key = (site is None or se.site != site, se.kind == "tape", name)
            ranked.append((key, ReadableReplica(se, replica.get("url"), storage_lfn(lfn, replica))))
    ranked.sort(key=lambda pair: pair[0])
    return [replica for _, replica in ranked], skipped
