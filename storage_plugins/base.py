"""The one interface every storage plugin implements (fsspec's AsyncFileSystem is the model).

A plugin serves the URLs of its schemes; everything is async, and bytes move as async streams
of chunks so that memory stays constant whatever the file size. Operations a protocol cannot do
raise `NotSupported`; the defaults below build get/put/checksum from read/write for plugins
whose server offers nothing better.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiofiles
import aiofiles.os
from pydantic import BaseModel, ConfigDict, ValidationError

from kernel import lease_held
from kernel.errors import InvalidInput, NotFound
from storage_plugins.byte_ranges import at_most
from storage_plugins.checksums import Adler32, tee_adler32
from storage_plugins.errors import ChecksumMismatch, NotSupported

CHUNK_SIZE = 1 << 20
# Deletions in flight at once on one server (`StoragePlugin.delete_many`).
DELETE_CONCURRENCY = 8
TpcMode = Literal["pull", "push"]


class PluginOptions(BaseModel):
    """Base of each plugin's options; unknown keys are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    chunk_size: int = CHUNK_SIZE


@dataclass(frozen=True)
class FileInfo:
    """What stat and list answer. `adler32` is filled when the server gave it at no extra cost."""

    url: str
    size: int
    is_dir: bool = False
    mtime: float | None = None
    adler32: str | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a write or a download moved: the bytes and their adler32, computed on the way."""

    url: str
    size: int
    adler32: str


async def read_local(path: Path, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Stream a local file in chunks."""
    async with aiofiles.open(path, "rb") as handle:
        while chunk := await handle.read(chunk_size):
            yield chunk


async def write_local(path: Path, stream: AsyncIterable[bytes]) -> int:
    """Write a stream into a local file (creating parents); returns the bytes written."""
    await aiofiles.os.makedirs(path.parent, exist_ok=True)
    size = 0
    async with aiofiles.open(path, "wb") as handle:
        async for chunk in stream:
            await handle.write(chunk)
            size += len(chunk)
    return size


def partial_path(target: Path) -> Path:
    """Where a download goes until it is complete and checked: beside target, renamed over it
    at the end, so a failed download never leaves a truncated file or touches what was there."""
    if target.exists() and not target.is_file():
        raise InvalidInput(f"{target}: a download must go to a regular file")
    return target.with_name(partial_name(target.name))


def partial_name(name: str) -> str:
    """The name of a file being written beside `name` (hidden, unique, renamed over it when
    complete), within NAME_MAX bytes: a name of 237 bytes or more would otherwise make every
    write of that file fail ("File name too long")."""
    suffix = f".cairn-part-{uuid.uuid4().hex[:8]}"
    head = f".{name}".encode()[:NAME_MAX - len(suffix)].decode(errors="ignore")  # whole characters only
    return head + suffix


async def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.remove(path)


@contextlib.asynccontextmanager
async def landing(target: Path) -> AsyncIterator[Path]:
    """The partial file (see `partial_path`) a download into target writes and checks in the block:
    renamed over target when the block ends, removed when it raises."""
    partial = await asyncio.to_thread(partial_path, target)
    try:
        yield partial
        await aiofiles.os.replace(partial, target)
    except BaseException:
        await _discard(partial)
        raise


NAME_MAX = 255  # bytes of a file name on Linux file systems
# What a PUT through a URL signed `create_only` must send: the URL is valid only with them.
CREATE_ONLY_HEADERS = {"If-None-Match": "*"}


def validated_options(
    model: type[PluginOptions], options: Mapping[str, Any] | None, schemes: Sequence[str]
) -> PluginOptions:
    """options as model, or InvalidInput naming the fields and their problems but never the values
    given: options carry secrets (tokens, keys) and this message reaches users (a request's
    last_error, an API answer)."""
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'options'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False, include_context=False)
        )
    # Raised outside the except block, so the ValidationError (whose text shows the values) is not
    # even this error's __context__, which tracebacks and error reporters print.
    raise InvalidInput(f"invalid options for the {', '.join(schemes)} storage plugin: {problems}")


class StoragePlugin(ABC):
    """A storage protocol. Subclasses set `schemes`, `Options`, and implement the abstract methods."""

    schemes: ClassVar[tuple[str, ...]] = ()
    # Endpoints whose plugins share a family can copy between each other without the caller
    # in the data path (root <-> root, http(s)/dav(s) <-> http(s)/dav(s)).
    tpc_family: ClassVar[str | None] = None
    # Whether checksum() is answered by the server without reading the file back through us.
    server_checksum: ClassVar[bool] = False
    # Whether `routed_copy` works: two URLs of this protocol copied by its own client in this
    # process (cheaper than a TPC for small files when the server spawns a process per TPC).
    routes_copies: ClassVar[bool] = False
    # Whether an SE's root is a directory that exists even when empty (not so in object stores).
    has_directories: ClassVar[bool] = True
    Options: ClassVar[type[PluginOptions]] = PluginOptions

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = validated_options(self.Options, options, self.schemes)

    @abstractmethod
    async def stat(self, url: str) -> FileInfo:
        """Size and kind of a file or directory; NotFound if it is not there."""

    async def exists(self, url: str) -> bool:
        """Whether the URL names a file or directory."""
        try:
            await self.stat(url)
        except NotFound:
            return False
        return True

    @abstractmethod
    async def list(self, url: str) -> list[FileInfo]:
        """The entries of a directory (or, for object stores, the objects under a prefix)."""

    async def walk(self, url: str) -> AsyncIterator[FileInfo]:
        """Every file below a directory, recursively, in the string order of their URLs, streamed:
        memory holds one directory's entries per level. A directory sorts as its name and "/",
        so a depth-first walk in that order yields URLs in plain string order."""
        entries = await self.list(url)
        entries.sort(key=lambda entry: entry.url + "/" if entry.is_dir else entry.url)
        for entry in entries:
            if entry.is_dir:
                async for inner in self.walk(entry.url):
                    yield inner
            else:
                yield entry

    @abstractmethod
    def read(self, url: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream a file's bytes, optionally a range of them."""

    @abstractmethod
    async def write(self, url: str, stream: AsyncIterable[bytes], *, size: int | None = None) -> WriteResult:
        """Store a stream at url (replacing what was there); size helps protocols that want it."""

    @abstractmethod
    async def delete(self, url: str) -> None:
        """Remove a file; NotFound if it is not there."""

    async def delete_many(self, urls: Sequence[str], *, concurrency: int = DELETE_CONCURRENCY) -> dict[str, Exception]:
        """Remove many files of this plugin's server, a file already gone counting as removed;
        returns `{url: error}` for those that could not be. This default runs `delete` with at
        most `concurrency` at once; a plugin whose server deletes in bulk overrides it. Work under
        a lease (`kernel.lease.while_held`) stops with LeaseLost before any storage call made once
        its lease may have run out: a holder that stalled in a long batch must not go on deleting
        paths its successor may have freed since."""
        gate = asyncio.Semaphore(concurrency)
        failed: dict[str, Exception] = {}

        async def one(url: str) -> None:
            async with gate:
                lease_held.check_held()  # before each deletion, not once a batch (`kernel.lease`: LeaseLost)
                try:
                    await self.delete(url)
                except NotFound:
                    pass
                except Exception as exc:  # reported per URL: one file's error must not stop the others
                    failed[url] = exc

        await asyncio.gather(*(one(url) for url in dict.fromkeys(urls)))
        return failed

    async def mkdir(self, url: str) -> None:  # noqa: B027 - object stores have no directories
        """Create a directory and its parents; object stores have none, so the default does nothing."""

    async def routed_copy(self, source: str, dest: str, *, expected_adler32: str, timeout_s: float) -> tuple[int, str]:
        """Copy between two URLs of this plugin's protocol through this process with the protocol's
        own client, the destination checking the stored bytes' adler32 against expected_adler32;
        returns (size, adler32 the destination computed). Only where `routes_copies` is True."""
        raise NotSupported(f"{source} -> {dest}: no client-routed copy for this protocol")

    async def size_and_checksum(self, url: str) -> tuple[int, str]:
        """Size and adler32 of a stored file (a copy's check); a plugin whose server says both in
        one answer overrides this."""
        return (await self.stat(url)).size, await self.checksum(url)

    async def checksum(self, url: str) -> str:
        """Adler32 of a stored file; servers that know it answer, otherwise the bytes are read."""
        digest = Adler32()
        async for chunk in self.read(url):
            digest.update(chunk)
        return digest.hexdigest()

    async def get(
        self, url: str, path: str | os.PathLike[str], *, expected_adler32: str | None = None,
        max_size: int | None = None,
    ) -> WriteResult:
        """Download url into a local file, checking the adler32 when one is expected; with
        max_size, a stored object bigger than that fails (ChecksumMismatch) once that much landed."""
        digest = Adler32()

        def too_big() -> ChecksumMismatch:
            return ChecksumMismatch(url, f"at most {max_size} bytes", f"more than {max_size} bytes")

        stream = self.read(url) if max_size is None else at_most(self.read(url), max_size, too_big)
        async with landing(Path(path)) as partial:
            size = await write_local(partial, tee_adler32(stream, digest))
            if expected_adler32 is not None and digest.hexdigest() != expected_adler32:
                raise ChecksumMismatch(url, expected_adler32, digest.hexdigest())
        return WriteResult(url, size, digest.hexdigest())

    async def put(
        self, path: str | os.PathLike[str], url: str, *, expected_adler32: str | None = None
    ) -> WriteResult:
        """Upload a local file to url; with expected_adler32, a mismatch deletes the upload and raises."""
        source = Path(path)
        size = (await aiofiles.os.stat(source)).st_size
        result = await self.write(url, read_local(source, self.options.chunk_size), size=size)
        if expected_adler32 is not None and result.adler32 != expected_adler32:
            await self.delete(url)
            raise ChecksumMismatch(url, expected_adler32, result.adler32)
        return result

    async def third_party_copy(
        self,
        source: str,
        dest: str,
        *,
        mode: TpcMode = "pull",
        overwrite: bool = True,
        timeout_s: float = 3600,
        remote_token: str | None = None,
    ) -> int:
        """Have the storage copy source to dest itself; returns the bytes it reports moved (0 when
        the protocol does not say: `storage_plugins.copy` reads the copy's size and checksum after).

        mode says which endpoint is active where the protocol lets the caller choose (HTTP);
        remote_token is the credential for the passive endpoint, if it needs one.
        """
        raise NotSupported(f"{source} -> {dest}: {self.schemes[0]} cannot do third-party copies")

    async def signed_url(
        self, url: str, *, method: Literal["GET", "PUT", "DELETE"] = "GET", lifetime_s: int = 3600,
        size: int | None = None, create_only: bool = False, if_match: str | None = None,
    ) -> str:
        """A URL that grants method on url, without further credentials, for lifetime_s seconds;
        a PUT of exactly `size` bytes only, and with `create_only` only where no object is (the
        PUT must then carry `CREATE_ONLY_HEADERS`, which the signature covers); a GET with
        `if_match` of the object with that entity tag only (the GET must carry `If-Match`)."""
        raise NotSupported(f"{url}: {self.schemes[0]} cannot issue time-limited URLs")

    async def entity_tag(self, url: str) -> str:
        """The entity tag of the object at url now (what `signed_url`'s `if_match` pins)."""
        raise NotSupported(f"{url}: {self.schemes[0]} has no entity tags")

    async def close(self) -> None:  # noqa: B027 - most plugins hold nothing to release
        """Release connections (sessions, thread pools)."""

    async def __aenter__(self) -> StoragePlugin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
