"""root:// to root:// through this process with XrdCl's own copy engine (what `xrdcp` runs), from
Debian's python3-xrootd: the bytes stream source → worker → destination in C++ threads, no
server-side TPC (which spawns an `xrdcp` process on the destination server per file).

The destination server computes the adler32 of what it stored and XrdCl compares it with the
one given (the catalogue's): a copy only succeeds when both agree, and a mismatched target is
removed by XrdCl (`rmBadCksum`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from kernel.errors import CairnError, ConfigurationError, NotFound, ServiceUnavailable
from storage_plugins.checksums import normalise_adler32
from storage_plugins.debian_modules import import_debian_module
from storage_plugins.errors import ChecksumMismatch, StorageError

# XrdCl reads these once per process, whether gfal2 or these bindings load it first. Its
# defaults retry an unreachable server for minutes; a transfer daemon would rather hear
# "unavailable" and retry the request later. Its timeouts are only checked every
# TIMEOUTRESOLUTION seconds (15 by default): concurrent small copies from two processes met
# a connection attempt that timed out after 2 s but was noticed 30 s later; checked every
# second, the slowest of 800 copies took 1.6 s.
# Copies move their bytes with plain reads and writes, not XRootD 5's page reads and writes
# (CPUSEPGWRTRD, on by default): those add a crc32c of every 4 KiB page, computed by the client
# both ways and by each server, and every copy Cairn makes is already checked end to end (the
# destination's adler32 of the stored bytes against the catalogue's; a corrupted page changes it,
# and the copy is refused and removed). A profile of the transfer workers under 1000 x 1 MiB
# routed copies (perf, bench/transfers.py) put 29% of their CPU in crc32c; without page checksums,
# per file: workers 3.9 -> 2.7 CPU-ms, the source server 1.45 -> 0.48.
XRDCL_DEFAULTS = {"XRD_CONNECTIONRETRY": "3", "XRD_CONNECTIONWINDOW": "2", "XRD_STREAMERRORWINDOW": "30",
                  "XRD_TIMEOUTRESOLUTION": "1", "XRD_CPUSEPGWRTRD": "0"}
# XrdCl status codes (XrdClStatus.hh): socket and connection errors and an expired operation mean
# "try again later"; 305 is a checksum mismatch. 3011 is the server's kXR_NotFound (its errno).
_UNAVAILABLE_CODES = {101, 102, 103, 104, 105, 106, 107, 108, 206}
_ERR_CHECKSUM = 305
_ERR_NOT_FOUND = 3011
_client: ModuleType | None = None


def apply_xrdcl_defaults() -> None:
    """Set XrdCl's settings in the environment, unless the operator set them."""
    for key, value in XRDCL_DEFAULTS.items():
        os.environ.setdefault(key, value)


def xrdcl_client() -> ModuleType:
    """`XRootD.client`: installed normally, or Debian's python3-xrootd outside sys.path."""
    global _client
    if _client is None:
        apply_xrdcl_defaults()
        _client = import_debian_module(
            "XRootD.client", "client-routed root:// copies need apt-get install python3-xrootd"
        )
    return _client


def available() -> bool:
    """Whether XrdCl's Python bindings can be loaded here."""
    try:
        xrdcl_client()
    except ConfigurationError:
        return False
    return True


@dataclass(frozen=True)
class Routed:
    """What one routed copy did: bytes moved and the adler32 the destination server computed."""

    size: int
    adler32: str


def _stored_adler32(result: dict[str, Any]) -> str:
    value = str(result.get("targetCheckSum", "")).partition(":")[2]
    return normalise_adler32(value) if value else ""


def _error(source: str, dest: str, status: Any, expected: str, result: dict[str, Any]) -> CairnError:
    where = f"{source} -> {dest}"
    if status.code == _ERR_CHECKSUM:
        return ChecksumMismatch(dest, expected, _stored_adler32(result) or f"({status.message})")
    if status.errno == _ERR_NOT_FOUND:
        return NotFound(f"{where}: no such file ({status.message})")
    if status.code in _UNAVAILABLE_CODES:
        return ServiceUnavailable(f"{where}: storage unavailable ({status.message})")
    return StorageError(f"{where}: {status.message}")


def copy_routed(source: str, dest: str, *, expected_adler32: str, timeout_s: float) -> Routed:
    """Copy one file (blocking: run it in a thread), overwriting dest and making its parents;
    raises ChecksumMismatch unless the destination's adler32 of the stored bytes is
    `expected_adler32`."""
    process = xrdcl_client().CopyProcess()
    process.add_job(source, dest, force=True, mkdir=True, thirdparty="none", checksummode="target",
                    checksumtype="adler32", checksumpreset=expected_adler32, rmBadCksum=True,
                    cptimeout=max(1, int(timeout_s)))
    status = process.prepare()
    if not status.ok:
        raise _error(source, dest, status, expected_adler32, {})
    status, results = process.run()
    result: dict[str, Any] = results[0] if results else {}
    job_status = result.get("status", status)
    if not job_status.ok:
        raise _error(source, dest, job_status, expected_adler32, result)
    stored = _stored_adler32(result)
    if stored != normalise_adler32(expected_adler32):  # XrdCl compared them; this is the record
        raise ChecksumMismatch(dest, expected_adler32, stored or "(none given)")
    return Routed(int(result.get("size", 0)), stored)
