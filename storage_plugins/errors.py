"""Errors of the storage layer. Missing objects, refused access, unreachable servers and bad
input use the kernel's classes (NotFound, Forbidden, ServiceUnavailable, InvalidInput), so
callers handle them the same way everywhere; what only storage can go wrong with is here.
Every message names the URL it is about."""

from __future__ import annotations

from kernel.errors import CairnError, Conflict


class StorageError(CairnError):
    """A storage element answered, but not with what was asked for."""

    status = 502
    code = "storage_error"


class ChecksumMismatch(StorageError):
    """Bytes read or written do not have the adler32 they should have."""

    code = "checksum_mismatch"

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{url}: adler32 is {actual}, expected {expected}",
            details={"url": url, "expected": expected, "actual": actual},
        )
        self.url, self.expected, self.actual = url, expected, actual


class TransferFailed(StorageError):
    """A third-party copy was accepted by the storage but did not complete."""

    code = "transfer_failed"


class NotSupported(StorageError):
    """The protocol cannot do this (a presigned URL over root://, TPC between S3 and XRootD)."""

    status = 501
    code = "not_supported"


class NotOnline(Conflict):
    """A tape file was read before a bring-online request staged it to disk."""

    code = "not_online"
