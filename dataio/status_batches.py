"""The last step of an upload for a batch of files: their replicas `copying` -> `available`, in
one catalogue call per batch (at most MAX_BATCH files), each change guarded by its replica still
being `copying`. The catalogue writes the whole batch in one bulk update (see
`catalogue.replicas.set_replica_statuses`), so a batch costs O(1) round trips, not one per file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from catalogue.refusals import refusal
from kernel.errors import CairnError

if TYPE_CHECKING:
    from catalogue.client import CatalogueClient

MAX_BATCH = 1000


async def make_available(client: CatalogueClient, se: str, lfns: Sequence[str], *,
                         writer: str | None = None) -> dict[str, CairnError]:
    """Flip the replicas of lfns on se from `copying` to `available` (with `writer`, an upload's
    token: only those that upload holds); answers why each one that was not flipped was refused
    (an empty dict: all were). A failed call raises."""
    refused: dict[str, CairnError] = {}
    held = {} if writer is None else {"writer": writer}
    for start in range(0, len(lfns), MAX_BATCH):
        chunk = lfns[start:start + MAX_BATCH]
        result = await client.set_replica_statuses(
            [{"lfn": lfn, "se": se, "status": "available", "expected": "copying", **held} for lfn in chunk])
        failed = result["failed"]
        refused.update({lfn: refusal(lfn, str(failed[lfn])) for lfn in chunk if lfn in failed})
    return refused
