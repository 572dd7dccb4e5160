"""`root://` URLs: XRootD storage through gfal2 (Debian's python3-gfal2).

gfal2 blocks, so every call runs in the plugin's bounded thread pool, never on the event loop;
each pool thread has its own gfal2 context. Streams move in `chunk_size` pieces; get and put
use gfal2's native copy (as fast as xrdcp) and check the adler32 of the stored bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiofiles.os
from pydantic import Field

from kernel.errors import (
    CairnError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from storage_plugins.base import FileInfo, PluginOptions, StoragePlugin, TpcMode, WriteResult, landing
from storage_plugins.checksums import Adler32, normalise_adler32
from storage_plugins.debian_modules import import_debian_module
from storage_plugins.errors import ChecksumMismatch, StorageError, TransferFailed
from storage_plugins.posix import file_url
from storage_plugins.xrdcl_copy import apply_xrdcl_defaults, copy_routed
from storage_plugins.xrdcl_copy import available as xrdcl_available

T = TypeVar("T")
_UNAVAILABLE = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.ECOMM,
    errno.ECONNRESET,
    errno.EAGAIN,
    errno.ENOTCONN,
    errno.EPIPE,
}
_gfal2: ModuleType | None = None
WATCH_S = 0.01  # how often a bounded download (`get` with max_size) looks at the size of what landed


def import_gfal2() -> ModuleType:
    """gfal2's Python module: installed normally, or Debian's python3-gfal2 outside sys.path."""
    global _gfal2
    if _gfal2 is None:
        apply_xrdcl_defaults()
        _gfal2 = import_debian_module(
            "gfal2", "the root:// plugin needs gfal2: apt-get install python3-gfal2 gfal2-plugin-xrootd"
        )
    return _gfal2


def gfal_error(url: str, exc: Exception) -> CairnError:
    """Map a gfal2.GError (errno in .code) to the kernel's classes, naming the URL."""
    code = getattr(exc, "code", 0)
    message = str(exc)
    if code == errno.ENOENT:
        return NotFound(f"{url}: no such file or directory ({message})")
    if code in (errno.EACCES, errno.EPERM):
        return Forbidden(f"{url}: permission denied ({message})")
    if code in _UNAVAILABLE or "expired" in message.lower():
        return ServiceUnavailable(f"{url}: storage unavailable ({message})")
    if code == errno.EEXIST:
        return Conflict(f"{url}: exists already ({message})")
    if code == errno.EINVAL:
        return InvalidInput(f"{url}: {message}")
    return StorageError(f"{url}: {message}")


class XRootDOptions(PluginOptions):
    chunk_size: int = 4 << 20
    # gfal2 calls in flight at once for this plugin instance.
    max_threads: int = Field(8, ge=1, le=128)
    transfer_timeout_s: int = Field(3600, ge=1, le=30 * 86400)
    # Client-routed copies (`routed_copy`) in flight at once; each holds a thread of its own pool
    # (XrdCl releases the GIL), so gfal2's calls never wait behind them.
    routed_threads: int = Field(8, ge=1, le=128)


def _is_root_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "root" or not parts.netloc:
        raise InvalidInput(f"{url}: not an XRootD URL (root://host:port//path)")


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))


def _local_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # not made yet
        return 0


def _adler32_of_file(path: Path, chunk_size: int) -> str:
    digest = Adler32()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class XRootDPlugin(StoragePlugin):
    """XRootD over gfal2, off the event loop."""

    schemes = ("root",)
    tpc_family = "root"
    server_checksum = True
    routes_copies = xrdcl_available()
    Options = XRootDOptions
    options: XRootDOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._gfal2 = import_gfal2()
        self._executor = ThreadPoolExecutor(self.options.max_threads, thread_name_prefix="gfal2")
        self._routed = ThreadPoolExecutor(self.options.routed_threads, thread_name_prefix="xrdcl")
        self._local = threading.local()

    def _context(self) -> Any:
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = self._gfal2.creat_context()
        return context

    async def _call(self, url: str, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(context, *args) in the pool; gfal2 errors become Cairn errors naming url."""

        def work() -> T:
            try:
                return fn(self._context(), *args)
            except self._gfal2.GError as exc:
                raise gfal_error(url, exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = ThreadPoolExecutor(self.options.max_threads, thread_name_prefix="gfal2")
        self._routed.shutdown(wait=False, cancel_futures=True)
        self._routed = ThreadPoolExecutor(self.options.routed_threads, thread_name_prefix="xrdcl")

    async def stat(self, url: str) -> FileInfo:
        _is_root_url(url)
        info = await self._call(url, lambda ctx: ctx.stat(url))
        is_dir = stat.S_ISDIR(info.st_mode)
        return FileInfo(url, 0 if is_dir else int(info.st_size), is_dir, float(info.st_mtime))

    async def list(self, url: str) -> list[FileInfo]:
        _is_root_url(url)
        base = url.rstrip("/")

        def listing(ctx: Any) -> list[FileInfo]:
            entries = []
            directory = ctx.opendir(url)
            while True:
                dirent, info = directory.readpp()
                if dirent is None:
                    break
                if dirent.d_name in (".", ".."):
                    continue
                is_dir = stat.S_ISDIR(info.st_mode)
                size = 0 if is_dir else int(info.st_size)
                entries.append(FileInfo(f"{base}/{dirent.d_name}", size, is_dir, float(info.st_mtime)))
            return sorted(entries, key=lambda entry: entry.url)

        return await self._call(url, listing)

    async def read(self, url: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        _is_root_url(url)
        if length == 0:
            return
        holder = [await self._call(url, lambda ctx: ctx.open(url, "r"))]
        try:
            if offset:
                await self._call(url, lambda _ctx: holder[0].lseek(offset, os.SEEK_SET))
            remaining = length
            while remaining is None or remaining > 0:
                want = (
                    self.options.chunk_size if remaining is None else min(remaining, self.options.chunk_size)
                )
                chunk = await self._call(url, lambda _ctx, n=want: holder[0].read_bytes(n))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            # The file closes when its last reference goes: let that happen in the pool.
            await asyncio.shield(self._call(url, lambda _ctx: holder.clear()))

    async def _open_for_writing(self, url: str) -> Any:
        try:
            return await self._call(url, lambda ctx: ctx.open(url, "w"))
        except NotFound:
            await self.mkdir(url.rstrip("/").rsplit("/", 1)[0])
            return await self._call(url, lambda ctx: ctx.open(url, "w"))

    async def write(self, url: str, stream: AsyncIterable[bytes], *, size: int | None = None) -> WriteResult:
        _is_root_url(url)
        digest = Adler32()
        holder = [await self._open_for_writing(url)]
        try:
            async for chunk in stream:
                digest.update(chunk)
                await self._call(url, lambda _ctx, data=chunk: holder[0].write(data))
        finally:
            await asyncio.shield(self._call(url, lambda _ctx: holder.clear()))
        return WriteResult(url, digest.size, digest.hexdigest())

    async def delete(self, url: str) -> None:
        _is_root_url(url)
        await self._call(url, lambda ctx: ctx.unlink(url))

    async def mkdir(self, url: str) -> None:
        _is_root_url(url)
        await self._call(url, lambda ctx: ctx.mkdir_rec(url, 0o755))

    async def checksum(self, url: str) -> str:
        _is_root_url(url)
        return normalise_adler32(await self._call(url, lambda ctx: ctx.checksum(url, "adler32")), url)

    def _copy_parameters(self, ctx: Any, overwrite: bool, timeout_s: float) -> Any:
        params = ctx.transfer_parameters()
        params.overwrite = overwrite
        params.create_parent = True
        params.timeout = int(timeout_s)
        return params

    async def _filecopy(self, source: str, dest: str, url: str, *, overwrite: bool, timeout_s: float) -> None:
        await self._call(
            url, lambda ctx: ctx.filecopy(self._copy_parameters(ctx, overwrite, timeout_s), source, dest)
        )

    async def get(
        self, url: str, path: str | os.PathLike[str], *, expected_adler32: str | None = None,
        max_size: int | None = None,
    ) -> WriteResult:
        _is_root_url(url)
        loop = asyncio.get_running_loop()
        async with landing(_absolute(path)) as partial:
            await self._copy_to_local(url, partial, max_size)
            actual = await loop.run_in_executor(
                self._executor, _adler32_of_file, partial, self.options.chunk_size
            )
            if expected_adler32 is not None and actual != expected_adler32:
                raise ChecksumMismatch(url, expected_adler32, actual)
            size = (await aiofiles.os.stat(partial)).st_size
        return WriteResult(url, size, actual)

    async def _copy_to_local(self, url: str, partial: Path, max_size: int | None) -> None:
        """gfal2's copy of url to the local file partial; with max_size, the copy is watched and
        cancelled once the file grows past it (an object replaced by a bigger one after its size
        was asked), so at most max_size plus what arrives within WATCH_S lands on the disk."""
        timeout = self.options.transfer_timeout_s
        running: list[Any] = []
        cancelled: list[bool] = []

        def copy(ctx: Any) -> None:
            running.append(ctx)
            try:
                ctx.filecopy(self._copy_parameters(ctx, True, timeout), url, file_url(partial))
            finally:
                if cancelled:  # the next call on this thread gets a fresh context (no cancellation left over)
                    self._local.context = None

        task = asyncio.ensure_future(self._call(url, copy))
        if max_size is None:
            await task
            return
        while not task.done():
            await asyncio.wait([task], timeout=WATCH_S)
            if _local_size(partial) > max_size:
                cancelled.append(True)
                for ctx in running:
                    ctx.cancel()
                with contextlib.suppress(CairnError):
                    await task
                raise ChecksumMismatch(url, f"at most {max_size} bytes", f"more than {max_size} bytes")
        await task
        if _local_size(partial) > max_size:
            raise ChecksumMismatch(url, f"at most {max_size} bytes", f"more than {max_size} bytes")

    async def put(
        self, path: str | os.PathLike[str], url: str, *, expected_adler32: str | None = None
    ) -> WriteResult:
        _is_root_url(url)
        source = _absolute(path)
        loop = asyncio.get_running_loop()
        # Hash the local bytes while gfal2 sends them; then the server's adler32 of what it
        # stored must agree with both.
        local_sum = loop.run_in_executor(self._executor, _adler32_of_file, source, self.options.chunk_size)
        timeout = self.options.transfer_timeout_s
        try:
            await self._filecopy(file_url(source), url, url, overwrite=True, timeout_s=timeout)
        finally:
            local = await local_sum
        stored = await self.checksum(url)
        expected = expected_adler32 or local
        if stored != expected or local != expected:
            with contextlib.suppress(CairnError):
                await self.delete(url)
            raise ChecksumMismatch(url, expected, stored if stored != expected else local)
        return WriteResult(url, (await aiofiles.os.stat(source)).st_size, stored)

    async def routed_copy(self, source: str, dest: str, *, expected_adler32: str, timeout_s: float) -> tuple[int, str]:
        """root:// to root:// through this process with XrdCl (as `xrdcp` without --tpc does); the
        destination server's adler32 of the stored bytes must be expected_adler32."""
        _is_root_url(source)
        _is_root_url(dest)
        routed = await asyncio.get_running_loop().run_in_executor(
            self._routed, lambda: copy_routed(source, dest, expected_adler32=expected_adler32, timeout_s=timeout_s))
        return routed.size, routed.adler32

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
        """root:// to root://: the destination server pulls from the source (XRootD TPC). gfal2 does
        not say how many bytes moved: 0 (the caller's check of the copy reads the size anyway, so
        no stat of dest here)."""
        _is_root_url(source)
        _is_root_url(dest)
        try:
            await self._filecopy(source, dest, dest, overwrite=overwrite, timeout_s=timeout_s)
        except CairnError as exc:
            # gfal2 retries a failed TPC with delegation and reports that attempt's error, which
            # hides the usual cause: say NotFound when the source is not there.
            if not await self.exists(source):
                raise NotFound(f"{source}: no such file (third-party copy to {dest})") from exc
            if isinstance(exc, StorageError):
                raise TransferFailed(f"{source} -> {dest}: third-party copy failed: {exc.message}") from exc
            raise
        return 0
