"""An upload's writer token as the catalogue keeps it (`catalogue.upload_leases`): its digest,
since replicas are shown to every reader of their file and the token is the upload's own. A
module of its own (hashlib only): the upload command computes it too, without the catalogue."""

from __future__ import annotations

import hashlib

WRITER = "writer"  # the replica's field
# When its writer last took or renewed it: the lease's clock, apart from the replica's `modified`,
# which status changes also set (an undo's `unavailable`, a transfer's `copying` again must not
# make a dead writer look alive). A replica without it (written before it existed, or pushed by
# a transfer) counts from `modified`.
WRITER_AT = "writer_at"
# On a replica registered together with its file by an upload (the registration created the
# record): the record is that replica's holder's to remove if the upload fails, whichever upload
# holds it by then (one that took it over after the first fell silent inherits it). The flip to
# `available` takes it off: the record is then a finished file's, never an undo's to remove.
FOUNDING = "founding"
# On a replica an upload's undo claimed (`copying` -> `unavailable`, guarded by its writer): when.
# The undo deletes the bytes before the claim and removes the replica right after it; one cut
# short in between (its process killed) leaves the mark, and the reaper finishes that undo once
# its writer has been silent for `abandoned_upload_s` (`transfers.abandoned_uploads`). Any other
# status change takes the mark off: an `unavailable` set otherwise (an operator, the auditor) is
# never an undo's.
UNDOING = "undoing"
# A transfer's destination replica is held by its request (`transfers.copy_steps`): a marker no
# upload's digest (32 hex digits) can equal, so no upload token renews it or passes for it.
TRANSFER = "transfer"
IN_PROGRESS = "in progress"  # a refusal's opening words, for clients to tell it from other refusals
NOT_HELD = "another writer took it over"  # why a holder's flip or undo of a replica was refused
# An upload silent this long is taken for dead (`catalogue.upload_leases`). Short, so that a killed
# upload blocks its files for seconds, not minutes; its holder renews every LEASE_S / RENEWALS in
# the background and, before writing more bytes, makes sure its last renewal is not older than
# LEASE_S / 2 (`dataio.upload_lease`), so a live upload is never taken over. Here, beside the
# writer's digest, because the upload command needs it without the catalogue's modules.
LEASE_S = 30.0
RENEWALS = 6  # renewals per LEASE_S: five may fail in a row (the catalogue away) before it lapses
# A transfer's hold lapses only after this much silence: a transfer worker notices a lost hold
# only at its next renewal and does not stop a copy for it, so its hold must outlast any stall
# of the worker (an event loop held up, the catalogue away) that a live copy may survive. A dead
# worker's request is claimed again by another, which holds the replica again.
TRANSFER_LEASE_S = 600.0


def writer_digest(token: str) -> str:
    """What a replica's `writer` holds for the upload whose token this is."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]
