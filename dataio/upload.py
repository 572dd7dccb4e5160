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
Only one upload writes a replica at a time: right after registering, an upload takes a lease on
each `copying` replica it is to write (`dataio.upload_lease`, `catalogue.upload_leases`), renewed
while its bytes move and again before the flip. A second upload of the same file to the same SE
(a retry, two shells, two hosts) finds the replica held and fails with `in_progress`, writing
nothing (or `exists`, if the first finished meanwhile); a `copying` replica whose upload died is
taken over once its lease has not been renewed for LEASE_S (30 s); an upload that lost its lease
so stops writing that file and neither flips nor undoes it. Rucio's upload leaves
this to storage (a temporary name renamed at the end, where the protocol can rename) and DIRAC's
to the last writer; neither fits a non-atomic SE (XRootD, WebDAV) where two writers of one path
leave a reader partial bytes, so the catalogue, which every upload consults first, decides.
A `bad` or `unavailable` replica is left alone and the file fails with a conflict.
If any step after 2 fails, the partial object is deleted and the registration undone (the
replica, and the file record if this upload created it), so nothing stays registered; only a
replica this upload still holds is undone (first taken `copying` -> `unavailable`), so what
another upload holds or made `available` stays, bytes and record.
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

from catalogue.storage_elements import StorageElement
from catalogue.writer_tokens import WRITER, writer_digest
from dataio.io_client import IOClient
from dataio.progress import FileOutcome, NoProgress, ProgressSink, counted
from dataio.signed_access import needs_signing, signed_endpoint, without_signature
from dataio.status_batches import make_available
from dataio.upload_items import PlannedFile
from dataio.upload_lease import UploadLease
from dataio.upload_registration import register
from dataio.upload_undo import discard_held, roll_back, same_bytes_available
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
class _Stored:
    """A file whose bytes are on the SE and verified, waiting for its replica's flip."""

    item: PlannedFile
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
    planned: list[PlannedFile] = []
    for local, target in targets:
        endpoints(se, target, "write", credentials=credentials)  # switched off: Forbidden naming SE and LFN
        size, unusable = _local_size(local)
        if unusable:
            outcomes[target] = _unusable(target, local, se, unusable)
            continue
        planned.append(PlannedFile(local, target, size))
    gate = asyncio.Semaphore(max(1, concurrency))  # files being stored at once
    disk = asyncio.Semaphore(DISK_THREADS)  # small files' copies to a posix SE
    summing = asyncio.Semaphore(SUM_THREADS)  # small files' sums
    in_flight = asyncio.Semaphore(2)  # batches registered and not yet flipped
    lease = UploadLease(client, se.name)
    preparing = asyncio.Lock()  # one batch hashed and registered at a time, in order

    async def one_batch(batch: list[PlannedFile]) -> None:
        async with in_flight:
            async with preparing:
                await _checksum_locals(batch, concurrency, summing)
                for item in batch:
                    if item.unreadable:
                        outcomes[item.lfn] = _unusable(item.lfn, item.local, se, item.unreadable)
                await register(client, se, lease, [item for item in batch if not item.unreadable], outcomes)
            todo = [item for item in batch if item.lfn not in outcomes]
            stored = await _store_all(client, gate, disk, se, lease, todo, credentials or {}, sink, outcomes)
            await _finalise(client, se, lease, stored, outcomes, sink)

    batches = [asyncio.ensure_future(one_batch(planned[i:i + BATCH])) for i in range(0, len(planned), BATCH)]
    try:
        await asyncio.gather(*batches)
    except BaseException:
        # What stops one batch (the API gone) stops the others: each undoes its files and ends.
        for batch in batches:
            batch.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        raise
    finally:
        await lease.close()
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


async def _checksum_locals(planned: list[PlannedFile], concurrency: int, summing: asyncio.Semaphore) -> None:
    """Size and adler32 of every file: small ones PUT_CHUNK per thread hop (a small file's hop
    costs more than its sum) in the `summing` slots, big ones `concurrency` at once (slots of their
    own: the previous batch's stores, holding the upload's, do not delay them). A file that
    cannot be read now is marked `unreadable` with the reason, and the others go on."""
    big = asyncio.Semaphore(max(1, concurrency))

    def sums(chunk: list[PlannedFile]) -> None:
        for item in chunk:
            try:
                item.size, item.adler32 = _adler32_of_file(item.local)
            except OSError as exc:  # gone or unreadable since it was planned
                item.unreadable = f"{item.local}: {exc.strerror or exc}"

    async def some(chunk: list[PlannedFile], slots: asyncio.Semaphore) -> None:
        async with slots:
            await asyncio.to_thread(sums, chunk)

    small = [item for item in planned if item.size <= SMALL_FILE]
    await asyncio.gather(*(some(small[i:i + PUT_CHUNK], summing) for i in range(0, len(small), PUT_CHUNK)),
                         *(some([item], big) for item in planned if item.size > SMALL_FILE))


async def _store_all(
    client: IOClient, gate: asyncio.Semaphore, disk: asyncio.Semaphore, se: StorageElement, lease: UploadLease,
    todo: list[PlannedFile],
    credentials: Credentials, sink: ProgressSink, outcomes: dict[str, FileOutcome],
) -> list[_Stored]:
    """Store a batch's files: small ones bound for a local-disk SE PUT_CHUNK at a time (one
    worker-thread hop each chunk, in the `disk` slots), the others one by one, each in one of
    the `gate`'s slots."""
    quick: list[tuple[PlannedFile, Endpoint]] = []
    each: list[PlannedFile] = []
    for item in todo:
        best = endpoints(se, item.lfn, "write", credentials=credentials)[0]
        if best.scheme == "file" and item.size <= SMALL_FILE:
            quick.append((item, best))
        else:
            each.append(item)
    chunked, single = await asyncio.gather(
        asyncio.gather(*(_store_chunk(client, gate, disk, se, lease, quick[i:i + PUT_CHUNK], credentials, sink,
                                      outcomes) for i in range(0, len(quick), PUT_CHUNK))),
        asyncio.gather(*(_store_one(client, gate, se, lease, item, credentials, sink, outcomes) for item in each)))
    return [entry for entry in [*(e for part in chunked for e in part), *single] if entry is not None]


async def _store_chunk(
    client: IOClient, gate: asyncio.Semaphore, disk: asyncio.Semaphore, se: StorageElement, lease: UploadLease,
    chunk: list[tuple[PlannedFile, Endpoint]], credentials: Credentials, sink: ProgressSink,
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
            # One call, no chunks to fence: it starts only with every replica held for LEASE_S / 2 more
            # at least; one lost (or the catalogue away) takes the one-file way, which fails it.
            try:
                lost = await lease.ensure([item.lfn for item, _ in chunk], within=lease.lease_s / 2)
            except (CairnError, OSError):
                lost = {item.lfn: "" for item, _ in chunk}
            held = [(item, ep) for item, ep in chunk if item.lfn not in lost]
            put = await plugin.put_many([(item.local, ep.url, item.adler32) for item, ep in held]) if held else []
            by_lfn = {item.lfn: result for (item, _), result in zip(held, put, strict=True)}
            results = [by_lfn.get(item.lfn) for item, _ in chunk]
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.gather(*(roll_back(client, se, lease, item, ep) for item, ep in chunk)))
        raise
    done: list[_Stored | None] = []
    again: list[PlannedFile] = []
    for (item, ep), result in zip(chunk, results, strict=True):
        if isinstance(result, WriteResult) and result.size == item.size:
            sink.advanced(item.lfn, item.size)
            done.append(_Stored(item, ep, started, []))
        else:
            again.append(item)
    done += await asyncio.gather(
        *(_store_one(client, gate, se, lease, item, credentials, sink, outcomes, announced=True) for item in again))
    return done


async def _store_one(
    client: IOClient, gate: asyncio.Semaphore, se: StorageElement, lease: UploadLease, item: PlannedFile,
    credentials: Credentials, sink: ProgressSink, outcomes: dict[str, FileOutcome], *, announced: bool = False,
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
                    async with lease.writing(item.lfn):  # stopped if another writer takes the replica over
                        await _store(client, ep, item, sink, lease)
                    return _Stored(item, ep, started, notes)
                except (ServiceUnavailable, StorageError) as exc:
                    notes.extend(await discard_held(client, lease, ep, item.lfn))  # not another writer's
                    if index == len(eps) - 1 or isinstance(exc, ChecksumMismatch):
                        raise
                    notes.append(f"{ep.scheme} failed ({exc.message}); trying {eps[index + 1].scheme}")
    except asyncio.CancelledError:
        # Interrupted (Ctrl-C), also while waiting for a slot: still leave nothing behind, then stop.
        await asyncio.shield(roll_back(client, se, lease, item, attempt))
        raise
    except (CairnError, OSError) as exc:
        outcomes[item.lfn] = await _failed(client, se, lease, item, None, started, exc, notes, sink)
    return None


async def _finalise(client: IOClient, se: StorageElement, lease: UploadLease, stored: list[_Stored],
                    outcomes: dict[str, FileOutcome], sink: ProgressSink) -> None:
    """Flip the stored files' replicas to available in one call; undo those it did not flip."""
    if not stored:
        return
    try:
        # Held for LEASE_S / 2 more at least, so no other upload writes over the bytes as they
        # become available; one taken over (this upload fell silent) is the other's to finish.
        lost = await lease.ensure(s.item.lfn for s in stored)
        for entry in [s for s in stored if s.item.lfn in lost]:
            sink.finished(entry.item.lfn, False)
            outcomes[entry.item.lfn] = FileOutcome(
                entry.item.lfn, str(entry.item.local), "failed", se.name, None, entry.item.size, entry.item.adler32,
                time.monotonic() - entry.started, f"{entry.item.lfn} not made available on SE {se.name}: "
                f"{lost[entry.item.lfn]}", "in_progress", entry.notes)
        stored = [s for s in stored if s.item.lfn not in lost]
        refused: dict[str, CairnError] = await make_available(client, se.name, [s.item.lfn for s in stored],
                                                                writer=lease.writer)
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.gather(*(roll_back(client, se, lease, s.item, s.endpoint) for s in stored)))
        raise
    except (CairnError, OSError) as exc:  # the call failed: no file of the batch is known available
        refused = {s.item.lfn: _as_error(exc, s.item) for s in stored}
    finished = await same_bytes_available(client, se, [s.item for s in stored if s.item.lfn in refused])
    for entry in stored:
        item = entry.item
        if item.lfn in finished and finished[item.lfn].get(WRITER) == writer_digest(lease.writer):
            refused.pop(item.lfn)  # flipped by this upload: a call sent again after its answer was lost
        elif item.lfn in finished:  # another upload of the same bytes flipped it first: they are there
            sink.finished(item.lfn, True)
            outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "exists", se.name,
                                             finished[item.lfn].get("url"), item.size, item.adler32,
                                             time.monotonic() - entry.started,
                                             notes=[*entry.notes, "another upload of the same file finished first"])
            continue
        error = refused.get(item.lfn)
        if error is not None:
            outcomes[item.lfn] = await _failed(client, se, lease, item, entry.endpoint, entry.started, error,
                                               entry.notes, sink)
            continue
        sink.finished(item.lfn, True)
        outcomes[item.lfn] = FileOutcome(item.lfn, str(item.local), "uploaded", se.name, entry.endpoint.url,
                                         item.size, item.adler32, time.monotonic() - entry.started,
                                         notes=entry.notes)
    await lease.release(s.item.lfn for s in stored)


def _as_error(exc: Exception, item: PlannedFile) -> CairnError:
    return exc if isinstance(exc, CairnError) else StorageError(f"{item.local}: {exc}")


async def _failed(client: IOClient, se: StorageElement, lease: UploadLease, item: PlannedFile, stored: Endpoint | None,
                  started: float, exc: Exception, notes: list[str], sink: ProgressSink) -> FileOutcome:
    """Undo a file's upload (its bytes, its registration) and say why it failed."""
    error = _as_error(exc, item)
    error.within(f"upload of {item.local} to {item.lfn} on SE {se.name}")
    notes = [*notes, *await roll_back(client, se, lease, item, stored)]
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


async def _store(client: IOClient, ep: Endpoint, item: PlannedFile, sink: ProgressSink, lease: UploadLease) -> None:
    """Send the file and check that the storage holds exactly what was registered; each chunk of
    a stream goes only while this upload holds the replica (`UploadLease.fence`)."""
    if needs_signing(ep):
        for again in (True, False):
            signed = await signed_endpoint(client, ep, item.lfn, "PUT")
            try:
                await _send_signed(client, signed, item, sink, lease)
                return
            except Conflict as exc:  # an object is there (an upload of this replica that died): once more
                if not again:
                    raise without_signature(exc, signed.url) from None
                await client.discard_stored(item.lfn, ep.se.name, lease.writer)
            except CairnError as exc:
                raise without_signature(exc, signed.url) from None
    plugin = client.plugin(ep.url, ep.options)
    if _native_put(plugin, item.size):
        await lease.fence(item.lfn)  # one call, no chunks to fence: it starts only while this upload holds it
        # The plugin checks the adler32 of what it stored against expected_adler32 (gfal2: the
        # server's; posix: of the bytes it copied, in one thread) and stores nothing on a mismatch.
        result = await plugin.put(item.local, ep.url, expected_adler32=item.adler32)
        if result.size and result.size != item.size:
            raise StorageError(f"{ep.url}: {result.size} bytes were stored, {item.size} were registered")
        sink.advanced(item.lfn, item.size)
        return
    passed = Adler32()
    chunks = lease.fenced(item.lfn, read_local(item.local, plugin.options.chunk_size))
    stream = counted(tee_adler32(chunks, passed), item.lfn, sink)
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


async def _send_signed(client: IOClient, signed: Endpoint, item: PlannedFile, sink: ProgressSink,
                       lease: UploadLease) -> None:
    """PUT to a signed URL: S3 stores all of the body or nothing, and the adler32 of what was
    sent must be the registered one (the URL grants no HEAD to ask the storage afterwards)."""
    plugin = client.plugin(signed.url, signed.options)
    passed = Adler32()
    chunks = lease.fenced(item.lfn, read_local(item.local, plugin.options.chunk_size))
    await plugin.write(signed.url, counted(tee_adler32(chunks, passed), item.lfn, sink), size=item.size)
    if passed.hexdigest() != item.adler32:
        raise ChecksumMismatch(file_url(item.local), item.adler32, passed.hexdigest()).within(
            "the local file changed while it was uploaded")
