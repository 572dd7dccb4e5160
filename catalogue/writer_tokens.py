"""An upload's writer token as the catalogue keeps it (`catalogue.upload_leases`): its digest,
since replicas are shown to every reader of their file and the token is the upload's own. A
module of its own (hashlib only): the upload command computes it too, without the catalogue."""

from __future__ import annotations

import hashlib

WRITER = "writer"  # the replica's field
# A transfer's destination replica is held by its request (`transfers.copy_steps`): a marker no
# upload's digest (32 hex digits) can equal, so no upload token renews it or passes for it.
TRANSFER = "transfer"
IN_PROGRESS = "in progress"  # a refusal's opening words, for clients to tell it from other refusals


def writer_digest(token: str) -> str:
    """What a replica's `writer` holds for the upload whose token this is."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]
