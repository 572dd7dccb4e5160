"""Download files by LFN from their best replica, verified against the catalogue's adler32.

The files' records (size, adler32, replicas) are looked up first, one catalogue call per
thousand LFNs. For each LFN the replicas are tried in `replica_order` (available, SE readable,
this site first, disk before tape) and, within a replica, the SE's read protocols best first.
Bytes land in a hidden partial file beside the target, renamed over it only once their size
and adler32 match the catalogue's, so a failed or corrupt download never leaves a file behind.

What makes a replica fail and what happens next:
- protocol down or refusing (ServiceUnavailable, Forbidden, a storage error): the SE's next
  protocol, then the next replica;
- object missing (NotFound) or a tape file not staged (NotOnline): the next replica;
- corrupted (size or adler32 differs): the replica is reported `bad` to the catalogue when the
  caller may change the file's replicas (w on the file), else it is only skipped; either way
  the outcome's notes say so, and the next replica is tried. Bad bytes are never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiofiles.os

from catalogue.lfn import check_lfn
from catalogue.refusals import refusal
from catalogue.storage_elements import StorageElement
from dataio.io_client import IOClient
from dataio.progress import FileOutcome, NoProgress, ProgressSink, counted
from dataio.replica_order import ReadableReplica, replicas_to_read
from dataio.signed_access import needs_signing, signed_endpoint, without_signature
from kernel.errors import CairnError, Forbidden, InvalidInput, NotFound
from storage_plugins.base import StoragePlugin, landing, write_local
from storage_plugins.byte_ranges import at_most
from storage_plugins.checksums import Adler32, tee_adler32
from storage_plugins.errors import ChecksumMismatch
from transfers.endpoints import Endpoint, endpoints
from transfers.suspicious_client import report_missing

Credentials = Mapping[str, Mapping[str, str]]
Json = dict[str, Any]
# Called with the URL between a native copy's size check and the copy (tests replace the object
# there, as a storage changed behind the catalogue's back would).
SIZE_CHECKED: list[Callable[[str], Awaitable[None]]] = []
NEXT_PROTOCOL_ERRORS = ("service_unavailable", "storage_error", "forbidden", "invalid_input", "not_supported",
                        "transfer_failed")


class ReplicaCorrupted(ChecksumMismatch):
    """A replica's bytes are not the file's (adler32 or size differ from the catalogue's)."""


def local_targets(lfns: Sequence[str], dest: str | Path | None) -> list[tuple[str, Path]]:
    """Where each LFN lands: dest itself for one LFN unless dest is a directory (existing, or
    ending with '/'), else dest/<name>; the current directory when dest is None."""
    if not lfns:
        raise InvalidInput("nothing to download: give at least one LFN")
    into = Path(dest) if dest is not None else Path.cwd()
    as_directory = dest is None or len(lfns) > 1 or str(dest).endswith("/") or into.is_dir()
    targets = [(lfn, into / lfn.rstrip("/").rsplit("/", 1)[-1] if as_directory else into) for lfn in lfns]
    seen: dict[Path, str] = {}
    for lfn, path in targets:
        if path in seen:
            raise InvalidInput(f"{seen[path]} and {lfn} would both be downloaded to {path}")
        seen[path] = lfn
    return targets


async def download_files(
    client: IOClient,
    lfns: Sequence[str],
    dest: str | Path | None = None,
    *,
    credentials: Credentials | None = None,
    site: str | None = None,
    progress: ProgressSink | None = None,
    concurrency: int = 4,
) -> list[FileOutcome]:
    """Download LFNs into dest; one outcome per LFN (downloaded, or failed with every reason)."""
    sink = progress or NoProgress()
    targets = local_targets(lfns, dest)
    ses = {se["name"]: StorageElement.model_validate(se) for se in await client.list_ses()}
    files = await lookup(client, [lfn for lfn, _ in targets])
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(lfn: str, path: Path) -> FileOutcome:
        async with gate:
            return await download_one(client, lfn, path, ses, credentials=credentials or {}, site=site, sink=sink,
                                      file=files[lfn])

    return list(await asyncio.gather(*(one(lfn, path) for lfn, path in targets)))


async def lookup(client: IOClient, lfns: Sequence[str]) -> dict[str, Json | CairnError]:
    """Each LFN's file record, or why it cannot be read (one catalogue call per thousand LFNs)."""
    found: dict[str, Json | CairnError] = {}
    wanted = []
    for lfn in dict.fromkeys(lfns):
        try:
            wanted.append(check_lfn(lfn))
        except CairnError as exc:  # a malformed LFN fails that file, not the whole lookup
            found[lfn] = exc
    result = await client.lookup_files(wanted)
    found.update(result["successful"])
    found.update({lfn: refusal(lfn, reason) for lfn, reason in result["failed"].items()})
    return found


async def download_one(
    client: IOClient,
    lfn: str,
    path: Path,
    ses: Mapping[str, StorageElement],
    *,
    credentials: Credentials,
    site: str | None,
    sink: ProgressSink,
    file: Json | CairnError | None = None,
) -> FileOutcome:
    """Fetch one LFN from the first replica that delivers its exact bytes (`file`: its record,
    or why it could not be looked up, when the caller looked it up already)."""
    started = time.monotonic()
    try:
        doc = file if file is not None else await client.get_file(lfn)
        if isinstance(doc, CairnError):
            raise doc
    except CairnError as exc:
        return FileOutcome(lfn, str(path), "failed", error=exc.message, code=exc.code)
    size, adler32 = int(doc["size"]), str(doc["adler32"])
    readable, skipped = replicas_to_read(lfn, doc.get("replicas", []), ses, site=site)
    notes = [f"SE {name} not tried: {why}" for name, why in skipped.items()]
    sink.started(lfn, size)
    last: CairnError | None = None
    for replica in readable:
        try:
            ep = await _fetch_replica(client, replica, lfn, path, size, adler32, credentials, sink, notes)
        except ReplicaCorrupted as exc:
            notes.append(f"SE {replica.se.name}: corrupted replica ({exc.message}); "
                         + await _report_bad(client, lfn, replica.se.name))
            last = exc
        except CairnError as exc:
            notes.append(f"SE {replica.se.name}: {exc.message}")
            if isinstance(exc, NotFound):
                notes.append(await report_missing(client, lfn, replica.se.name, exc.message))
            last = exc
        except OSError as exc:  # the local side (DEST unwritable, disk full): no replica can help
            sink.finished(lfn, False)
            return FileOutcome(lfn, str(path), "failed", size=size, adler32=adler32, code="local_error",
                               error=f"download of {lfn} to {path}: {exc}", notes=notes)
        else:
            sink.finished(lfn, True)
            return FileOutcome(lfn, str(path), "downloaded", replica.se.name, ep.url, size, adler32,
                               time.monotonic() - started, notes=notes)
    sink.finished(lfn, False)
    if not readable:
        message = f"{lfn} has no readable replica" + (f" ({'; '.join(notes)})" if notes else "")
        return FileOutcome(lfn, str(path), "failed", size=size, adler32=adler32, error=message,
                           code="no_readable_replica", notes=notes)
    message = f"no replica of {lfn} could be read: " + "; ".join(notes)
    return FileOutcome(lfn, str(path), "failed", size=size, adler32=adler32, seconds=time.monotonic() - started,
                       error=message, code=last.code if last else "failed", notes=notes)


async def _fetch_replica(
    client: IOClient, replica: ReadableReplica, lfn: str, path: Path, size: int, adler32: str,
    credentials: Credentials, sink: ProgressSink, notes: list[str],
) -> Endpoint:
    """Download from one replica, over its SE's read protocols in turn; the endpoint used."""
    eps = endpoints(replica.se, replica.path, "read", credentials=credentials, registered_url=replica.url)
    for index, ep in enumerate(eps):
        try:
            if needs_signing(ep):
                signed = await signed_endpoint(client, ep, lfn, "GET")
                try:
                    await _fetch(client, signed, path, size, adler32, lfn, sink)
                except CairnError as exc:
                    raise without_signature(exc, signed.url) from None
            else:
                await _fetch(client, ep, path, size, adler32, lfn, sink)
            return ep
        except ReplicaCorrupted:
            raise
        except CairnError as exc:
            if exc.code not in NEXT_PROTOCOL_ERRORS or index == len(eps) - 1:
                raise
            notes.append(f"SE {replica.se.name} over {ep.scheme}: {exc.message}; trying {eps[index + 1].scheme}")
    raise AssertionError("endpoints() never answers an empty list")


def _native_get(plugin: StoragePlugin) -> bool:
    """Whether the plugin downloads to local files its own way (gfal2) rather than through read()."""
    return type(plugin).get is not StoragePlugin.get


async def _fetch(
    client: IOClient, ep: Endpoint, path: Path, size: int, adler32: str, lfn: str, sink: ProgressSink,
) -> None:
    plugin = client.plugin(ep.url, ep.options)
    if _native_get(plugin):
        # The protocol's own copy takes every byte the storage has before anything is compared:
        # an object larger than the file (replaced behind the catalogue's back) would fill the
        # reader's disk. Its size is asked first (a wrong one fails before a byte moves), and the
        # copy itself is bounded by it (an object replaced between the two stops the copy there).
        stored = (await plugin.stat(ep.url)).size
        if stored != size:
            raise ReplicaCorrupted(ep.url, f"{adler32} of {size} bytes", f"{stored} bytes stored")
        for hook in SIZE_CHECKED:
            await hook(ep.url)
        try:
            result = await plugin.get(ep.url, path, expected_adler32=adler32, max_size=size)
        except ChecksumMismatch as exc:
            raise ReplicaCorrupted(ep.url, adler32, exc.actual) from None
        sink.advanced(lfn, result.size)
        if result.size != size:
            with contextlib.suppress(OSError):
                await aiofiles.os.remove(path)
            raise ReplicaCorrupted(ep.url, adler32, result.adler32).within(f"size {result.size} != {size}")
        return
    digest = Adler32()

    def too_many() -> ReplicaCorrupted:  # a replica (or its server) sending more is not the file
        return ReplicaCorrupted(ep.url, f"{adler32} of {size} bytes", f"more than {size} bytes")

    try:
        async with landing(path) as partial:
            await write_local(partial, counted(tee_adler32(at_most(plugin.read(ep.url), size, too_many), digest),
                                               lfn, sink))
            if digest.size != size or digest.hexdigest() != adler32:
                error = ReplicaCorrupted(ep.url, adler32, digest.hexdigest())
                raise error.within(f"size {digest.size} != {size}") if digest.size != size else error
    except BaseException:
        sink.advanced(lfn, -digest.size)  # the next replica starts the count again
        raise


async def _report_bad(client: IOClient, lfn: str, se: str) -> str:
    """Mark a corrupted replica bad if the caller may; say what was done."""
    try:
        await client.set_replica_status(lfn, se, "bad", expected="available")
    except Forbidden:
        return "not permitted to mark it bad in the catalogue, skipped it"
    except CairnError as exc:
        return f"could not mark it bad ({exc.message}), skipped it"
    return "marked bad in the catalogue"

