"""`file://` URLs: a local (or locally mounted) directory, through aiofiles."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import stat
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import aiofiles
import aiofiles.os

from kernel.errors import CairnError, Forbidden, InvalidInput, NotFound, ServiceUnavailable
from storage_plugins.base import FileInfo, PluginOptions, StoragePlugin, WriteResult, partial_name
from storage_plugins.checksums import Adler32
from storage_plugins.errors import ChecksumMismatch


def local_path(url: str) -> Path:
    """The absolute local path of a file:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("file", "") or parts.netloc not in ("", "localhost"):
        raise InvalidInput(f"{url}: not a local file URL (file:///absolute/path)")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidInput(f"{url}: the path must be absolute")
    return Path(path)


def file_url(path: str | os.PathLike[str]) -> str:
    """The file:// URL of a local path."""
    return "file://" + quote(str(Path(path).absolute()))


def os_error(url: str, exc: OSError) -> CairnError:
    """Map an OSError to the kernel's error classes, naming the URL."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        return NotFound(f"{url}: no such file or directory")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Forbidden(f"{url}: permission denied ({reason})")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE, errno.ETIMEDOUT):
        return ServiceUnavailable(f"{url}: storage unavailable ({reason})")
    return InvalidInput(f"{url}: {reason}")


@contextmanager
def mapped_os_errors(url: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise os_error(url, exc) from exc


def _scan(path: Path, url_of: Callable[[Path], str]) -> list[FileInfo]:
    entries = []
    with os.scandir(path) as scan:
        for entry in scan:
            info = entry.stat()
            is_dir = entry.is_dir()
            entries.append(
                FileInfo(url_of(Path(entry.path)), 0 if is_dir else info.st_size, is_dir, info.st_mtime)
            )
    return sorted(entries, key=lambda item: item.url)


# What `PosixPlugin.put_many` copies: a local file, the URL it goes to, its expected adler32.
PutItem = tuple[Path, str, str | None]


class PosixOptions(PluginOptions):
    # The SE's directory: when set, a path that resolves outside it (through `..` or a symlink)
    # is refused before anything is opened. Cairn's daemons and routes always set it.
    root: str | None = None


def confined_path(url: str, root: str | None, real_dirs: dict[str, str] | None = None) -> Path:
    """The local path of url, refused (Forbidden) if it holds a `..` segment (also percent-encoded)
    or, when root is given, if its real path (symlinks resolved) leaves root's real path.
    real_dirs, when given, keeps the real paths of root and of the directories seen, for the
    next call on the same files (a file that is a symlink is still resolved itself)."""
    path = local_path(url)
    if ".." in path.parts:
        raise Forbidden(f"{url}: a '..' segment is refused")
    if root is not None:
        known = {} if real_dirs is None else real_dirs
        if root not in known:
            known[root] = os.path.realpath(root)
        top, real = known[root], _real_path(path, known)
        if real != top and not real.startswith(top.rstrip("/") + "/"):
            raise Forbidden(f"{url}: the path leaves its storage element's directory")
    return path


def _real_path(path: Path, real_dirs: dict[str, str]) -> str:
    """os.path.realpath(path), taking its directory's real path from real_dirs when known there."""
    parent, name = os.path.split(str(path))
    if not name or os.path.islink(path):
        return os.path.realpath(path)
    real_parent = real_dirs.get(parent)
    if real_parent is None:
        real_parent = os.path.realpath(parent)
        if os.path.isdir(parent):  # a directory yet to be made may be made a symlink meanwhile
            real_dirs[parent] = real_parent
    return os.path.join(real_parent, name)


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of data is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_file(source: Path, url: str, root: str | None, chunk_size: int, expected_adler32: str | None,
               stop: threading.Event, real_dirs: dict[str, str], made_dirs: set[str]) -> tuple[int, str]:
    """Copy a local file to url's path (through a partial file, renamed when complete and, with
    expected_adler32, only if the bytes copied have it); in one thread, so a small file costs one
    hop off the event loop. `stop` set: the copy ends at the next chunk, leaving nothing.
    made_dirs: the directories made (or found) by the calls before, not made again."""
    path = confined_path(url, root, real_dirs)
    if (parent := str(path.parent)) not in made_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        made_dirs.add(parent)
    partial = os.path.join(parent, partial_name(path.name))
    digest = Adler32()
    # File descriptors, not Python file objects: a small file's copy is mostly system calls, and
    # the objects' set-up cost as much again (1000 x 100 KiB: CPU 0.60-0.77 s against 0.38-0.58).
    # The partial name is new (random suffix): created exclusively, never through a symlink.
    created = False
    try:
        source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            target_fd = os.open(partial, _NEW_FILE, 0o666)
            created = True
            try:
                while chunk := os.read(source_fd, chunk_size):
                    if stop.is_set():
                        raise InterruptedError(f"copy of {source} to {url} stopped")
                    digest.update(chunk)
                    _write_all(target_fd, chunk)
            finally:
                os.close(target_fd)
        finally:
            os.close(source_fd)
        if expected_adler32 is not None and digest.hexdigest() != expected_adler32:
            raise ChecksumMismatch(url, expected_adler32, digest.hexdigest())
        os.replace(partial, path)
    except BaseException:
        if created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        raise
    return digest.size, digest.hexdigest()


class PosixPlugin(StoragePlugin):
    """Files in a local directory tree; writes land atomically (temp file, then rename)."""

    schemes = ("file",)
    Options = PosixOptions
    options: PosixOptions

    async def _path(self, url: str) -> Path:
        return await asyncio.to_thread(confined_path, url, self.options.root)

    def _url(self, path: Path) -> str:
        return file_url(path)

    async def stat(self, url: str) -> FileInfo:
        path = await self._path(url)
        with mapped_os_errors(url):
            info = await aiofiles.os.stat(path)
        is_dir = stat.S_ISDIR(info.st_mode)
        return FileInfo(url, 0 if is_dir else info.st_size, is_dir, info.st_mtime)

    async def list(self, url: str) -> list[FileInfo]:
        path = await self._path(url)
        with mapped_os_errors(url):
            return await asyncio.to_thread(_scan, path, self._url)

    async def read(self, url: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = await self._path(url)
        with mapped_os_errors(url):
            async with aiofiles.open(path, "rb") as handle:
                if offset:
                    await handle.seek(offset)
                remaining = length
                while remaining is None or remaining > 0:
                    want = (
                        self.options.chunk_size
                        if remaining is None
                        else min(remaining, self.options.chunk_size)
                    )
                    chunk = await handle.read(want)
                    if not chunk:
                        break
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk

    async def write(self, url: str, stream: AsyncIterable[bytes], *, size: int | None = None) -> WriteResult:
        path = await self._path(url)
        partial = path.with_name(partial_name(path.name))
        digest = Adler32()
        with mapped_os_errors(url):
            await aiofiles.os.makedirs(path.parent, exist_ok=True)
            try:
                async with aiofiles.open(partial, "wb") as handle:
                    async for chunk in stream:
                        digest.update(chunk)
                        await handle.write(chunk)
                await aiofiles.os.replace(partial, path)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return WriteResult(url, digest.size, digest.hexdigest())

    async def put(
        self, path: str | os.PathLike[str], url: str, *, expected_adler32: str | None = None
    ) -> WriteResult:
        """Copy a local file in one worker thread; a mismatch with expected_adler32 stores nothing."""
        (result,) = await self.put_many([(Path(path), url, expected_adler32)])
        if isinstance(result, CairnError):
            raise result
        return result

    async def put_many(self, items: Sequence[PutItem]) -> Sequence[WriteResult | CairnError]:
        """Copy several small local files, each as `put` does (local path, URL, expected adler32),
        one after the other in one worker thread: one hop off the event loop for all of them.
        One result per item, in order: its WriteResult, or the error that stopped that file."""
        stop = threading.Event()
        copy = asyncio.ensure_future(asyncio.to_thread(self._copy_each, items, stop))
        try:
            return await asyncio.shield(copy)
        except asyncio.CancelledError:
            stop.set()  # a thread cannot be cancelled: it stops at its next chunk and removes its partial file
            await asyncio.wait([copy])
            copy.exception()  # retrieved: what the stopped thread raised, if anything, is moot
            raise

    def _copy_each(self, items: Sequence[PutItem], stop: threading.Event) -> Sequence[WriteResult | CairnError]:
        results: builtins.list[WriteResult | CairnError] = []
        real_dirs: dict[str, str] = {}
        made_dirs: set[str] = set()
        for source, url, expected in items:
            if stop.is_set():
                break
            try:
                with mapped_os_errors(url):
                    size, adler32 = _copy_file(source, url, self.options.root, self.options.chunk_size, expected,
                                               stop, real_dirs, made_dirs)
                results.append(WriteResult(url, size, adler32))
            except CairnError as exc:
                results.append(exc)
        return results

    async def delete(self, url: str) -> None:
        path = await self._path(url)
        with mapped_os_errors(url):
            await aiofiles.os.remove(path)

    async def mkdir(self, url: str) -> None:
        path = await self._path(url)
        with mapped_os_errors(url):
            await aiofiles.os.makedirs(path, exist_ok=True)
