"""Why a transfer failed, and whether trying again can help.

Permanent: nothing to copy from (no source, the file or its last source missing, a checksum
that stays wrong), or a request the system cannot carry out (bad input, unsupported protocol).
A NotFound is the source's (SOURCE_MISSING, still to be confirmed by a stat of the source:
`transfers.failed_copies`) unless the copy knew it came from the destination
(`negotiation.error_side`): a destination's is transient, and never the source's loss.
Transient: the storage or network is down or slow (timeouts, 5xx, refused connections →
ServiceUnavailable), a third-party copy that did not complete, an SE switched off for a while.
Transient failures are retried with exponential backoff until the request's attempts run out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from catalogue.replica_removal import ReplicaBeingRemoved
from kernel.errors import CairnError, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from storage_plugins.errors import ChecksumMismatch, NotSupported, StorageError

# Reasons, as counted in link statistics and shown in `last_error`'s `error_class`.
NO_SOURCE = "no_source"
NO_SUCH_FILE = "no_such_file"
SOURCE_MISSING = "source_missing"
DESTINATION_NOT_FOUND = "destination_not_found"
FILE_REPLACED = "file_replaced"
DESTINATION_BEING_DELETED = "destination_being_deleted"
DESTINATION_IN_PROGRESS = "destination_in_progress"  # an upload holds the destination replica: later
CHECKSUM = "checksum_mismatch"
UNAVAILABLE = "storage_unavailable"
TRANSFER_FAILED = "transfer_failed"
FORBIDDEN = "forbidden"
INVALID = "invalid"
TIMEOUT = "timeout"
OTHER = "other"


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    permanent: bool


def classify(exc: BaseException) -> Failure:
    """The reason for an exception raised by a copy, and whether it is permanent."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ChecksumMismatch):
        return Failure(CHECKSUM, message, permanent=False)
    if isinstance(exc, NotFound) and exc.details.get("side") == "destination":
        return Failure(DESTINATION_NOT_FOUND, f"the destination answered not found (its bucket or directory may be "
                                              f"missing; the source is not in question): {message}", permanent=False)
    if isinstance(exc, NotFound):
        return Failure(SOURCE_MISSING, message, permanent=True)
    if isinstance(exc, ReplicaBeingRemoved):  # retried until the deletion has removed the record
        return Failure(DESTINATION_BEING_DELETED, message, permanent=False)
    if isinstance(exc, InvalidInput | NotSupported):
        return Failure(INVALID, message, permanent=True)
    if isinstance(exc, Forbidden):
        return Failure(FORBIDDEN, message, permanent=False)
    if isinstance(exc, ServiceUnavailable | aiohttp.ClientError | ConnectionError):
        return Failure(UNAVAILABLE, message, permanent=False)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Failure(TIMEOUT, message, permanent=False)
    if isinstance(exc, StorageError):
        return Failure(TRANSFER_FAILED, message, permanent=False)
    if isinstance(exc, CairnError | OSError):
        return Failure(OTHER, message, permanent=False)
    return Failure(OTHER, f"{type(exc).__name__}: {message}", permanent=False)


def file_replaced(request: Mapping[str, Any], file_doc: Mapping[str, Any] | None) -> Failure | None:
    """The failure of a request whose LFN now names another file than the one it was authorized
    for at submission (its `guid`; requests without one, the daemons', act on the LFN): that
    file was removed and another registered in its place, maybe by someone the requester may
    not act for. None while it is the same file (or there is none: the caller says so)."""
    wanted = request.get("guid")
    if not wanted or file_doc is None or file_doc.get("guid") == wanted:
        return None
    return Failure(FILE_REPLACED, f"{request['lfn']} is no longer the file this request was submitted for (GUID "
                                  f"{wanted}, now {file_doc.get('guid')}): nothing done to it", permanent=True)


def backoff_s(attempts: int, *, base_s: float, cap_s: float) -> float:
    """Delay before the next try after `attempts` tries: base * 2^(attempts-1), at most cap."""
    return float(min(cap_s, base_s * 2 ** max(0, min(attempts - 1, 30))))


def retry_delay_s(failure: Failure, attempts: int, max_attempts: int, *, base_s: float, cap_s: float) -> float | None:
    """The one fail-or-retry rule for requests: None to give up (a permanent failure, or the
    attempts used up), else the delay before the next try (exponential backoff, capped)."""
    if failure.permanent or attempts >= max_attempts:
        return None
    return backoff_s(attempts, base_s=base_s, cap_s=cap_s)
