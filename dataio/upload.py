"""Upload local files to an SE and register them in the catalogue, all or nothing per file.

Order of events for each file (Rucio's upload does the same):
1. the local file's size and adler32 are computed (off the event loop);
2. the file is registered with a `copying` replica on the SE, in one bulk call per batch:
   this is the permission check (w+x on the directory), done before any byte moves, and it
   reserves the LFN so a concurrent upload of different content fails at once;
3. the bytes go to the SE's best write protocol (the next one if a protocol is down); the
   adler32 of what was sent is computed while streaming and must equal the one registered
   (else the local file changed meanwhile), and what the storage holds must match too
   (its own adler32 where the server computes one, else its size and the plugin's sum);
4. the replicas of a batch's stored files are flipped `copying` -> `available` in one call
   (`dataio.status_batches`), once every file of the batch is stored or has failed.
Files go in batches of BATCH: while one batch is stored and flipped, the next is hashed and
registered (at most two batches registered and not yet flipped), so neither the catalogue nor
the copies wait for the other, and a crash leaves at most two batches of `copying` records.
A `copying` replica found on the SE already (an upload that died) is written over; a `bad` or
`unavailable` one is left alone and the file fails with a conflict.
If any step after 2 fails, the partial object is deleted and the registration undone (the
replica, and the file record if this upload created it), so nothing stays registered; the undo
first takes the replica `copying` -> `unavailable`, so that a concurrent upload of the same file
(which found the replica `copying` and writes over it) never has what it finished undone, and a
flip refused because such an upload made the replica `available` first is reported `exists`.
A file that is already registered with an available replica on that SE (same size and
adler32) is reported `exists` and not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalogue.refusals import refusal
from catalogue.storage_elements import StorageElement
from catalogue.storage_paths import storage_lfn
from dataio.io_client import IOClient
from dataio.progress import FileOutcome, NoProgress, ProgressSink, counted
from dataio.signed_access import needs_signing, signed_endpoint, without_signature
from dataio.status_batches import make_available
from kernel.errors import CairnError, Conflict, InvalidInput, NotFound, ServiceUnavailable
from storage_plugins.base import StoragePlugin, WriteResult, read_local
from storage_plugins.checksums import Adler32, tee_adler32
from storage_plugins.errors import ChecksumMismatch, StorageError
from storage_plugins.posix import PosixPlugin, file_url, local_path
from storage_plugins.registry import plugin_class, scheme_of
from transfers.endpoints import Endpoint, endpoints

Credentials = Mapping[str, Mapping[str, str]]
HASH_CHUNK = 4 << 20
BATCH = 500  # files per registration and per finalisation call (bench/upload_small.py)
SMALL_FILE = 1 << 20  # up to this size, a file goes to a posix SE in one step (`_native_put`)
PUT_CHUNK = 16  # small files copied to a posix SE in one worker-thread hop (`_store_chunk`)
# Worker threads at once for small files' copies to a posix SE: short system calls between bits
# of Python, where more threads mostly take turns at the GIL. 1000 x 100 KiB to a local disk
# (bench/upload_small.py, same run): client CPU 0.48-0.53 s with one thread, 0.61-0.76 with two,
# 0.79-0.94 with four; wall 0.88-0.98, 0.91-1.03, 1.01-1.17 s. Two, not one: an SE on a network
# mount (each file creation a round trip) still gets some overlap.
DISK_THREADS = 2
# Small files' sums have one thread of their own: in the copies' slots, the next batch's sums
# (which its registration waits for) queued behind this batch's copies, and the next copies then
# waited for that registration. 1000 x 100 KiB, medians of 5 uploads, three interleaved pairs:
# 0.62 / 0.71 / 0.61 s in the copies' slots, 0.62 / 0.55 / 0.57 s in a slot of their own.
SUM_THREADS = 1


@dataclass
class _Planned:
    local: Path
    lfn: str
    size: int = 0
    adler32: str = ""
    created: bool = False
    unreadable: str | None = None  # why its sum could not be read (it fails alone)


@dataclass
class _Stored:
    """A file whose bytes are on the SE and verified, waiting for its replica's flip."""

    item: _Planned
    endpoint: Endpoint
    started: float
    notes: list[str]


def _adler32_of_file(path: Path) -> tuple[int, str]:
    digest = Adler32()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.size, digest.hexdigest()


def local_file(path: str | Path) -> Path:
    """A local path, or a file:// URL; any other URL is refused (SE to SE copies are transfers)."""
    text = str(path)
    if "://" not in text:
        return Path(path)
    scheme = scheme_of(text)
    if scheme == "file":
        return local_path(text)
    plugin_class(scheme)  # an unknown scheme: InvalidInput naming the known ones
    raise InvalidInput(f"{text}: upload sends local files; to copy from a {scheme}:// storage, "
                       "register its replica and ask for a transfer (cairn replicate)")


async def target_lfns(client: IOClient, paths: Sequence[Path], lfn: str) -> list[tuple[Path, str]]:
    """Where each local file goes: lfn itself for one file, else lfn/<name> for each.

    lfn is taken as a directory when several files are given, when it ends with '/', or when
    it names an existing directory.
    """
    if not paths:
        raise InvalidInput("nothing to upload: give at least one local file")
    as_directory = len(paths) > 1 or lfn.endswith("/")
    if not as_directory:
        with contextlib.suppress(NotFound):
            as_directory = (await client.stat(lfn)).get("type") == "directory"
    base = lfn.rstrip("/") or ""
    targets = [(p, f"{base}/{p.name}" if as_directory else lfn) for p in paths]
    seen: dict[str, Path] = {}
    for path, target in targets:
        if target in seen:
            raise InvalidInput(f"{seen[target]} and {path} would both be uploaded to {target}")
        seen[target] = path
    return targets


async def upload_files(
    client: IOClient,
    paths: Sequence[str | Path],
    lfn: str,
    se_name: str,
    *,
    credentials: Credentials | None = None,
    progress: ProgressSink | None = None,
    concurrency: int = 4,
) -> list[FileOutcome]:
    """Upload local files to lfn (a file, or a directory for several) on SE se_name.

    Returns one outcome per file (uploaded, exists or failed with the reason); raises for what
    stops the whole call: an unknown SE, an SE switched off for writing, the API unreachable.
    """
    sink = progress or NoProgress()
    locals_ = [local_file(p) for p in paths]
    se = StorageElement.model_validate(await client.get_se(se_name))
    targets = await target_lfns(client, locals_, lfn)
    outcomes: dict[str, FileOutcome] = {}
    planned: list[_Planned] = []
    for local, target in targets:
        endpoints(se, target, "write", credentials=credentials)  # switched off: Forbidden naming SE and LFN
        size, unusable = _local_size(local)
        if unusable:
            outcomes[target] = _unusable(target, local, se, unusable)
            continue
        planned.append(_Planned(local, target, size))
    gate = asyncio.Semaphore(max(1, concurrency))  # files being stored at once
    disk = asyncio.Semaphore(DISK_THREADS)  # small files' copies to a posix SE
    summing = asyncio.Semaphore(SUM_THREADS)  # small files' sums
    in_flight = asyncio.Semaphore(2)  # batches registered and not yet flipped
    preparing = asyncio.Lock()  # one batch hashed and registered at a time, in order

    async def one_batch(batch: list[_Planned]) -> None:
        async with in_flight:
            async with preparing:
                await _checksum_locals(batch, concurrency, summing)
                for item in batch:
                    if item.unreadable:
                        outcomes[item.lfn] = _unusable(item.lfn, item.local, se, item.unreadable)
                await _register(client, se, [item for item in batch if not item.unreadable], outcomes)
            todo = [item for item in batch if item.lfn not in outcomes]
            stored = await _store_all(client, gate, disk, se, todo, credentials or {}, sink, outcomes)
            await _finalise(client, se, stored, outcomes, sink)

    batches = [asyncio.ensure_future(one_batch(planned[i:i + BATCH])) for i in range(0, len(planned), BATCH)]
    try:
        await asyncio.gather(*batches)
    except BaseException:
        # What stops one batch (the API gone) stops the others: each undoes its files and ends.
        for batch in batches:
            batch.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        raise
    return [outcomes[target] for _, target in targets]


def _local_size(path: Path) -> tuple[int, str | None]:
    """A local file's size as it is now (its sum gives the size registered), or why it cannot be
    uploaded."""
    try:
        info = path.stat()
    except OSError as exc:
        return 0, f"{path}: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return 0, f"{path}: not a regular file"
    return info.st_size, None


def _unusable(lfn: str, local: Path, se: StorageElement, reason: str) -> FileOutcome:
    """The outcome of a local file that cannot be uploaded as it is (nothing registered, nothing sent)."""
    return FileOutcome(lfn, str(local), "failed", se.name, error=reason, code=InvalidInput.code)


async def _checksum_locals(planned: list[_Planned], concurrency: int, summing: asyncio.Semaphore) -> None:
    """Size and adler32 of every file: small ones PUT_CHUNK per thread hop (a small file's hop
    costs more than its sum) in the `summing` slots, big ones `concurrency` at once (slots of their
    own: the previous batch's stores, holding the upload's, do not delay them). A file that
    cannot be read now is marked `unreadable` with the reason, and the others go on."""
    big = asyncio.Semaphore(max(1, concurrency))

    def sums(chunk: list[_Planned]) -> None:
        for item in chunk:
            try:
                item.size, item.adler32 = _adler32_of_file(item.local)
            except OSError as exc:  # gone or unreadable since it was planned
                item.unreadable = f"{item.local}: {exc.strerror or exc}"

    async def some(chunk: list[_Planned], slots: asyncio.Semaphore) -> None:
        async with slots:
            await asyncio.to_thread(sums, chunk)

    small = [item for item in planned if item.size <= SMALL_FILE]
    await asyncio.gather(*(some(small[i:i + PUT_CHUNK], summing) for i in range(0, len(small), PUT_CHUNK)),
                         *(some([item], big) for item in planned if item.size > SMALL_FILE))


async def _register(
    client: IOClient, se: StorageElement, planned: list[_Planned], outcomes: dict[str, FileOutcome]
) -> None:
    """Register every file with a copying replica (one call); refusals become failed outcomes."""
    if not planned:
        return
    files = [{"lfn": p.lfn, "size": p.size, "adler32": p.adler32, "replicas": [{"se": se.name, "status": "copying"}]}
             for p in planned]
    result = await client.register_files(files)
    existing = await _existing_files(client, [p.lfn for p in planned if p.lfn not in result["failed"]
                                              and not result["successful"][p.lfn].get("created")])
    for item in planned:
        if item.lfn in result["failed"]:
            reason = result["failed"][item.lfn]
            outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "failed", se.name, size=item.size,
                                             adler32=item.adler32, code="refused",
                                             error=f"{item.lfn} not registered, nothing sent to SE {se.name}: {reason}")
            continue
        item.created = bool(result["successful"][item.lfn].get("created"))
        if not item.created:
            mine = [r for r in existing[item.lfn].get("replicas", []) if r.get("se") == se.name]
            status = mine[0].get("status") if mine else None
            if status == "available":
                outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "exists", se.name, mine[0].get("url"),
                                                 item.size, item.adler32,
                                                 notes=[f"already on SE {se.name} with the same adler32"])
            elif status not in (None, "copying") or storage_lfn(item.lfn, mine[0]) != item.lfn:
                # A bad or unavailable replica is an operator's (or the reaper's) business: do not
                # overwrite its bytes, nor forget it on rollback. Nor one left by an upload whose
                # file was moved meanwhile: its bytes lie at the old LFN's path.
                outcomes[item.lfn] = FileOutcome(
                    item.lfn, str(item.local), "failed", se.name, size=item.size, adler32=item.adler32,
                    code="conflict", error=f"{item.lfn} already has a {status} replica on SE {se.name}; "
                                           "remove it (cairn replicas / rm) before uploading again")


async def _existing_files(client: IOClient, lfns: list[str]) -> dict[str, Any]:
    """The records of files that were registered before this upload (one call)."""
    if not lfns:
        return {}
    result = await client.lookup_files(lfns)
    for lfn, reason in result["failed"].items():
        raise refusal(lfn, reason)
    return dict(result["successful"])


async def _store_all(
    client: IOClient, gate: asyncio.Semaphore, disk: asyncio.Semaphore, se: StorageElement, todo: list[_Planned],
    credentials: Credentials, sink: ProgressSink, outcomes: dict[str, FileOutcome],
) -> list[_Stored]:
    """Store a batch's files: small ones bound for a local-disk SE PUT_CHUNK at a time (one
    worker-thread hop each chunk, in the `disk` slots), the others one by one, each in one of
    the `gate`'s slots."""
    quick: list[tuple[_Planned, Endpoint]] = []
    each: list[_Planned] = []
    for item in todo:
        best = endpoints(se, item.lfn, "write", credentials=credentials)[0]
        if best.scheme == "file" and item.size <= SMALL_FILE:
            quick.append((item, best))
        else:
            each.append(item)
    chunked, single = await asyncio.gather(
        asyncio.gather(*(_store_chunk(client, gate, disk, se, quick[i:i + PUT_CHUNK], credentials, sink, outcomes)
                         for i in range(0, len(quick), PUT_CHUNK))),
        asyncio.gather(*(_store_one(client, gate, se, item, credentials, sink, outcomes) for item in each)))
    return [entry for entry in [*(e for part in chunked for e in part), *single] if entry is not None]


async def _store_chunk(
    client: IOClient, gate: asyncio.Semaphore, disk: asyncio.Semaphore, se: StorageElement,
    chunk: list[tuple[_Planned, Endpoint]], credentials: Credentials, sink: ProgressSink,
    outcomes: dict[str, FileOutcome],
) -> list[_Stored | None]:
    """Copy small files to a local-disk SE in one thread (`PosixPlugin.put_many`: each checked
    against its registered adler32, stored whole or not at all) in one of the `disk` slots. A
    file that fails there takes the one-file way (`_store_one` in a `gate` slot: the SE's other
    protocols, then the undo and the reason)."""
    started = time.monotonic()
    try:
        async with disk:
            for item, _ in chunk:
                sink.started(item.lfn, item.size)
            first = chunk[0][1]
            plugin = client.plugin(first.url, first.options)
            if not isinstance(plugin, PosixPlugin):
                raise TypeError(f"{first.url}: a local-disk SE's plugin is {type(plugin).__name__}")
            results = await plugin.put_many([(item.local, ep.url, item.adler32) for item, ep in chunk])
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.gather(*(_roll_back(client, se, item, ep) for item, ep in chunk)))
        raise
    done: list[_Stored | None] = []
    again: list[_Planned] = []
    for (item, ep), result in zip(chunk, results, strict=True):
        if isinstance(result, WriteResult) and result.size == item.size:
            sink.advanced(item.lfn, item.size)
            done.append(_Stored(item, ep, started, []))
        else:
            again.append(item)
    done += await asyncio.gather(
        *(_store_one(client, gate, se, item, credentials, sink, outcomes, announced=True) for item in again))
    return done


async def _store_one(
    client: IOClient, gate: asyncio.Semaphore, se: StorageElement, item: _Planned, credentials: Credentials,
    sink: ProgressSink, outcomes: dict[str, FileOutcome], *, announced: bool = False,
) -> _Stored | None:
    """Store one file in one of the `gate`'s slots; on failure, undo it and record the outcome."""
    started = time.monotonic()
    notes: list[str] = []
    attempt: Endpoint | None = None
    try:
        async with gate:
            if not announced:
                sink.started(item.lfn, item.size)
            eps = endpoints(se, item.lfn, "write", credentials=credentials)
            for index, ep in enumerate(eps):
                attempt = ep
                try:
                    await _store(client, ep, item, sink)
                    return _Stored(item, ep, started, notes)
                except (ServiceUnavailable, StorageError) as exc:
                    await _discard(client, ep, item.lfn)
                    if index == len(eps) - 1 or isinstance(exc, ChecksumMismatch):
                        raise
                    notes.append(f"{ep.scheme} failed ({exc.message}); trying {eps[index + 1].scheme}")
    except asyncio.CancelledError:
        # Interrupted (Ctrl-C), also while waiting for a slot: still leave nothing behind, then stop.
        await asyncio.shield(_roll_back(client, se, item, attempt))
        raise
    except (CairnError, OSError) as exc:
        outcomes[item.lfn] = await _failed(client, se, item, None, started, exc, notes, sink)
    return None


async def _finalise(client: IOClient, se: StorageElement, stored: list[_Stored], outcomes: dict[str, FileOutcome],
                    sink: ProgressSink) -> None:
    """Flip the stored files' replicas to available in one call; undo those it did not flip."""
    if not stored:
        return
    try:
        refused: dict[str, CairnError] = await make_available(client, se.name, [s.item.lfn for s in stored])
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.gather(*(_roll_back(client, se, s.item, s.endpoint) for s in stored)))
        raise
    except (CairnError, OSError) as exc:  # the call failed: no file of the batch is known available
        refused = {s.item.lfn: _as_error(exc, s.item) for s in stored}
    finished = await _finished_by_others(client, se, [s.item for s in stored if s.item.lfn in refused])
    for entry in stored:
        item = entry.item
        if item.lfn in finished:  # another upload of the same bytes flipped it first: they are there
            sink.finished(item.lfn, True)
            outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "exists", se.name, finished[item.lfn],
                                             item.size, item.adler32, time.monotonic() - entry.started,
                                             notes=[*entry.notes, "another upload of the same file finished first"])
            continue
        error = refused.get(item.lfn)
        if error is not None:
            outcomes[item.lfn] = await _failed(client, se, item, entry.endpoint, entry.started, error, entry.notes,
                                               sink)
            continue
        sink.finished(item.lfn, True)
        outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "uploaded", se.name, entry.endpoint.url,
                                         item.size, item.adler32, time.monotonic() - entry.started,
                                         notes=entry.notes)


def _as_error(exc: Exception, item: _Planned) -> CairnError:
    return exc if isinstance(exc, CairnError) else StorageError(f"{item.local}: {exc}")


async def _failed(client: IOClient, se: StorageElement, item: _Planned, stored: Endpoint | None, started: float,
                  exc: Exception, notes: list[str], sink: ProgressSink) -> FileOutcome:
    """Undo a file's upload (its bytes, its registration) and say why it failed."""
    error = _as_error(exc, item)
    error.within(f"upload of {item.local} to {item.lfn} on SE {se.name}")
    notes = [*notes, *await _roll_back(client, se, item, stored)]
    sink.finished(item.lfn, False)
    return FileOutcome(item.lfn, str(item.local), "failed", se.name, None, item.size, item.adler32,
                       time.monotonic() - started, error.message, error.code, notes)


def _native_put(plugin: StoragePlugin, size: int) -> bool:
    """Whether to hand the local file to the plugin's own put rather than stream it through
    write(): where the plugin moves files its own way (gfal2), and for a small file where its put
    is one copy in one thread (posix: a stream costs a dozen thread hops per file). A large file
    to a posix SE streams, so that its progress shows as it moves."""
    if type(plugin).put is StoragePlugin.put:
        return False
    return not isinstance(plugin, PosixPlugin) or size <= SMALL_FILE


async def _store(client: IOClient, ep: Endpoint, item: _Planned, sink: ProgressSink) -> None:
    """Send the file and check that the storage holds exactly what was registered."""
    if needs_signing(ep):
        for again in (True, False):
            signed = await signed_endpoint(client, ep, item.lfn, "PUT")
            try:
                await _send_signed(client, signed, item, sink)
                return
            except Conflict as exc:  # an object is there (an upload of this replica that died): once more
                if not again:
                    raise without_signature(exc, signed.url) from None
                await client.discard_stored(item.lfn, ep.se.name)
            except CairnError as exc:
                raise without_signature(exc, signed.url) from None
    plugin = client.plugin(ep.url, ep.options)
    if _native_put(plugin, item.size):
        # The plugin checks the adler32 of what it stored against expected_adler32 (gfal2: the
        # server's; posix: of the bytes it copied, in one thread) and stores nothing on a mismatch.
        result = await plugin.put(item.local, ep.url, expected_adler32=item.adler32)
        if result.size and result.size != item.size:
            raise StorageError(f"{ep.url}: {result.size} bytes were stored, {item.size} were registered")
        sink.advanced(item.lfn, item.size)
        return
    passed = Adler32()
    stream = counted(tee_adler32(read_local(item.local, plugin.options.chunk_size), passed), item.lfn, sink)
    result = await plugin.write(ep.url, stream, size=item.size)
    if passed.hexdigest() != item.adler32:
        raise ChecksumMismatch(file_url(item.local), item.adler32, passed.hexdigest()).within(
            "the local file changed while it was uploaded")
    stored = await plugin.checksum(ep.url) if plugin.server_checksum else result.adler32
    if stored != item.adler32:
        raise ChecksumMismatch(ep.url, item.adler32, stored)
    size = (await plugin.stat(ep.url)).size
    if size != item.size:
        raise StorageError(f"{ep.url}: the storage holds {size} bytes, {item.size} were sent")


async def _send_signed(client: IOClient, signed: Endpoint, item: _Planned, sink: ProgressSink) -> None:
    """PUT to a signed URL: S3 stores all of the body or nothing, and the adler32 of what was
    sent must be the registered one (the URL grants no HEAD to ask the storage afterwards)."""
    plugin = client.plugin(signed.url, signed.options)
    passed = Adler32()
    stream = counted(tee_adler32(read_local(item.local, plugin.options.chunk_size), passed), item.lfn, sink)
    await plugin.write(signed.url, stream, size=item.size)
    if passed.hexdigest() != item.adler32:
        raise ChecksumMismatch(file_url(item.local), item.adler32, passed.hexdigest()).within(
            "the local file changed while it was uploaded")


async def _discard(client: IOClient, ep: Endpoint, lfn: str) -> None:
    """Remove a partial or unverified object (nothing there is fine)."""
    with contextlib.suppress(CairnError, OSError):
        if needs_signing(ep):
            await client.discard_stored(lfn, ep.se.name)  # the server deletes: no DELETE URL outlives its check
            return
        await client.plugin(ep.url, ep.options).delete(ep.url)


async def _finished_by_others(client: IOClient, se: StorageElement, items: list[_Planned]) -> dict[str, str | None]:
    """Of files whose flip was refused, those whose replica on se another upload of the same
    bytes (same size and adler32, as registration checked) made `available` meanwhile: their URLs."""
    if not items:
        return {}
    try:
        found = (await client.lookup_files([item.lfn for item in items]))["successful"]
    except CairnError:
        return {}
    out: dict[str, str | None] = {}
    for item in items:
        doc = found.get(item.lfn) or {}
        mine = [r for r in doc.get("replicas", []) if r.get("se") == se.name and r.get("status") == "available"]
        if mine and doc.get("size") == item.size and doc.get("adler32") == item.adler32:
            out[item.lfn] = mine[0].get("url")
    return out


async def _roll_back(client: IOClient, se: StorageElement, item: _Planned, stored: Endpoint | None) -> list[str]:
    """Delete what was stored (if anything) and undo the registration, once the replica is this
    upload's to undo: another upload of the same file may share it (it found it `copying`, or
    this one did), and what that one made `available` meanwhile stays, bytes and record."""
    if stored is not None and needs_signing(stored):
        await _discard(client, stored, item.lfn)  # the server deletes only a replica still `copying`
    claimed, why = await _claim(client, se, item)
    if not claimed:
        return [why, *await _forget_empty(client, item)]
    if stored is not None and not needs_signing(stored):
        await _discard(client, stored, item.lfn)
    return await _unregister(client, se, item)


async def _claim(client: IOClient, se: StorageElement, item: _Planned) -> tuple[bool, str]:
    """Take the replica `copying` -> `unavailable` (guarded): no other upload flips it from then on.
    Refused (it is `available`, or another undo took it): (False, why)."""
    try:
        result = await client.set_replica_statuses(
            [{"lfn": item.lfn, "se": se.name, "status": "unavailable", "expected": "copying"}])
    except CairnError as exc:
        return False, f"registration of {item.lfn} left as it is: {exc.message}"
    if item.lfn in result["failed"]:
        return False, f"registration of {item.lfn} left as it is: {result['failed'][item.lfn]}"
    return True, ""


async def _forget_empty(client: IOClient, item: _Planned) -> list[str]:
    """A file this upload created, left without any replica by another upload's undo, goes too
    (a file with replicas is kept: it is no longer only this upload's)."""
    if not item.created:
        return []
    with contextlib.suppress(CairnError):
        result = await client.remove_files([item.lfn])
        if not result["failed"]:
            return ["registration undone"]
    return []


async def _unregister(client: IOClient, se: StorageElement, item: _Planned) -> list[str]:
    """Undo the registration of a failed upload whose replica it claimed; notes say what could not
    be undone. A file it created goes only if no other upload has added a replica to it since."""
    try:
        result: dict[str, Any] = await client.remove_replicas([{"lfn": item.lfn, "se": se.name}])
        if item.created and not result["failed"]:
            result = await client.remove_files([item.lfn])
    except CairnError as exc:
        return [f"could not undo the registration of {item.lfn}: {exc.message}"]
    if result["failed"]:
        return [f"could not undo the registration of {item.lfn}: {result['failed'][item.lfn]}"]
    return ["registration undone"]
