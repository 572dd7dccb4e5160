"""`tape:///path` URLs: a directory standing for a tape library, behind a disk cache.

Writes go straight to "tape" (the directory). Reads are refused with NotOnline until a
bring-online request has staged the file into the disk cache, which takes `stage_delay_s`;
each request pins its staged copies for a lifetime, `release` drops one request's pin (or all),
and a copy is evicted once no pin on it is live (`storage_plugins.tape_pins`). State (requests,
pins) lives in files under the cache directory, so a stager in another process, or after a
restart, sees and completes the same requests.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiofiles.os
from pydantic import Field

from kernel.errors import InvalidInput, NotFound, ServiceUnavailable
from storage_plugins.base import FileInfo, PluginOptions, StoragePlugin, WriteResult
from storage_plugins.errors import NotOnline
from storage_plugins.posix import PosixPlugin, file_url, mapped_os_errors
from storage_plugins.tape_pins import PinStore, read_json, write_json

StageStatus = Literal["queued", "online", "failed", "evicted", "released"]


class TapeOptions(PluginOptions):
    cache_dir: str
    stage_delay_s: float = Field(5.0, ge=0)
    pin_lifetime_s: float = Field(3600.0, gt=0)


def tape_path(url: str) -> Path:
    """The path on tape of a tape:///absolute/path URL."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme != "tape" or parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise InvalidInput(f"{url}: not a tape URL (tape:///absolute/path)")
    if ".." in Path(path).parts:
        raise InvalidInput(f"{url}: a '..' segment is refused")
    return Path(path)


class TapePlugin(StoragePlugin):
    """A tape library simulated by a directory, with staging, pins and eviction."""

    schemes = ("tape",)
    Options = TapeOptions
    options: TapeOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.cache = Path(self.options.cache_dir)
        self.pins = PinStore(self.cache)
        self._disk = PosixPlugin({"chunk_size": self.options.chunk_size})
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Staging runs in worker threads, from the delayed task or from a poll that finds the
        # delay over; one at a time, so both cannot copy the same file into the cache at once.
        self._stage_lock = threading.Lock()

    # -- where things are -------------------------------------------------------------------
    def _on_tape(self, url: str) -> str:
        return file_url(tape_path(url))

    def _cached(self, url: str) -> Path:
        return self.cache / "files" / str(tape_path(url)).lstrip("/")

    def _request_file(self, request_id: str) -> Path:
        if not request_id.isalnum():
            raise InvalidInput(f"{request_id!r} is not a bring-online request id")
        return self.cache / "requests" / f"{request_id}.json"

    # -- the tape namespace -----------------------------------------------------------------
    async def stat(self, url: str) -> FileInfo:
        info = await self._disk.stat(self._on_tape(url))
        return FileInfo(url, info.size, info.is_dir, info.mtime)

    async def list(self, url: str) -> list[FileInfo]:
        prefix = url.rstrip("/")
        entries = await self._disk.list(self._on_tape(url))
        return [FileInfo(f"{prefix}/{e.url.rsplit('/', 1)[-1]}", e.size, e.is_dir, e.mtime) for e in entries]

    async def write(self, url: str, stream: AsyncIterable[bytes], *, size: int | None = None) -> WriteResult:
        result = await self._disk.write(self._on_tape(url), stream, size=size)
        return WriteResult(url, result.size, result.adler32)

    async def delete(self, url: str) -> None:
        await self._disk.delete(self._on_tape(url))
        with mapped_os_errors(url):
            await asyncio.to_thread(self._release, url, None)

    async def mkdir(self, url: str) -> None:
        await self._disk.mkdir(self._on_tape(url))

    async def checksum(self, url: str) -> str:
        # A tape system keeps checksums in its namespace; reading it costs no staging.
        return await self._disk.checksum(self._on_tape(url))

    # -- disk cache ---------------------------------------------------------------------------
    async def is_online(self, url: str) -> bool:
        """Whether url has a staged copy under a pin that has not expired."""
        await self.evict_expired()
        live = await asyncio.to_thread(self.pins.live, str(tape_path(url)))
        return bool(live) and await aiofiles.os.path.exists(self._cached(url))

    async def read(self, url: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if not await self.is_online(url):
            await self.stat(url)  # NotFound for a file that is not on tape at all
            raise NotOnline(f"{url}: on tape only; issue a bring-online request and wait until it is online")
        async for chunk in self._disk.read(file_url(self._cached(url)), offset=offset, length=length):
            yield chunk

    async def bring_online(self, urls: builtins.list[str], *, pin_lifetime_s: float | None = None,
                           request_id: str | None = None) -> str:
        """Ask for files to be staged to disk; returns the request id to poll. With `request_id`
        (the caller's, noted before it asks), a request asked already under it is answered, not
        made again: a caller that died between its ask and its record asks again safely."""
        if not urls:
            raise InvalidInput("a bring-online request needs at least one file")
        if request_id is not None and await asyncio.to_thread(self._request_file(request_id).exists):
            return request_id
        for url in urls:
            info = await self.stat(url)
            if info.is_dir:
                raise InvalidInput(f"{url}: is a directory; bring files online, not directories")
        await self.evict_expired()
        request_id = request_id or uuid.uuid4().hex
        now = time.time()
        record = {
            "id": request_id,
            "files": {url: "queued" for url in urls},
            "created": now,
            "ready_at": now + self.options.stage_delay_s,
            "pin_lifetime_s": pin_lifetime_s or self.options.pin_lifetime_s,
        }
        with mapped_os_errors(urls[0]):  # the cache's disk full or gone: unavailable, not a crash
            await asyncio.to_thread(write_json, self._request_file(request_id), record)
        self._tasks[request_id] = asyncio.create_task(self._stage_later(request_id))
        return request_id

    async def poll_bring_online(self, request_id: str) -> dict[str, StageStatus]:
        """The status of each file of a request: queued, online, failed, evicted (no live pin is
        left on its staged copy: they expired or were released), or released before it was staged."""
        with mapped_os_errors(f"bring-online request {request_id}"):
            record = await asyncio.to_thread(read_json, self._request_file(request_id))
        if record is None:
            raise NotFound(f"tape bring-online request {request_id}: no such request")
        if time.time() >= record["ready_at"] and "queued" in record["files"].values():
            # The drive time is over but the files are not staged yet: the delayed task is late
            # (a loaded machine) or belongs to a process that died. Stage them now.
            await self._stage(request_id)
            record = await asyncio.to_thread(read_json, self._request_file(request_id)) or record
        statuses: dict[str, StageStatus] = {}
        for url, status in record["files"].items():
            if status == "online" and not await self.is_online(url):
                status = "evicted"  # staged, then its pin expired or was released
            statuses[url] = status
        return statuses

    async def release(self, url: str, *, request_id: str | None = None) -> bool:
        """Drop the pin bring-online request `request_id` holds on url (every pin on url when
        None); the staged copy is evicted once no pin is left. A file of that request not staged
        yet is not staged at all (as SRM's abort). True if the copy stays pinned."""
        # An id that cannot be one is refused here, not ignored.
        request_file = self._request_file(request_id) if request_id is not None else None
        with mapped_os_errors(url):  # the cache's disk full or failing: unavailable, not a crash
            return await asyncio.to_thread(self._release, url, request_id, request_file)

    def _release(self, url: str, request_id: str | None, request_file: Path | None = None) -> bool:
        with self.pins.locked():
            record = read_json(request_file) if request_file is not None else None
            if request_file is not None and record is not None and record["files"].get(url) == "queued":
                record["files"][url] = "released"
                write_json(request_file, record)
            if self.pins.remove(str(tape_path(url)), request_id):
                return True
            self._cached(url).unlink(missing_ok=True)
            return False

    async def evict_expired(self) -> builtins.list[str]:
        """Remove staged copies whose pins have expired (or were released); returns their URLs."""
        with mapped_os_errors("the tape SE's disk cache"):
            return await asyncio.to_thread(self._evict_expired)

    def _evict_expired(self) -> builtins.list[str]:
        evicted: builtins.list[str] = []
        files = self.cache / "files"
        if not files.is_dir():
            return evicted
        with self.pins.locked():
            now = time.time()
            for root, _dirs, names in os.walk(files):
                for name in names:
                    if name.startswith("."):
                        continue  # a copy being staged (".<name>.<id>.staging")
                    url = "tape:///" + Path(root, name).relative_to(files).as_posix()
                    if not self.pins.live(str(tape_path(url)), now):
                        self._evict(url)
                        evicted.append(url)
        return evicted

    def _evict(self, url: str) -> None:
        """Drop url's staged copy and every pin on it (call under `pins.locked`)."""
        self._cached(url).unlink(missing_ok=True)
        self.pins.remove(str(tape_path(url)), None)

    async def _stage_later(self, request_id: str) -> None:
        try:
            await asyncio.sleep(self.options.stage_delay_s)
            with contextlib.suppress(ServiceUnavailable):  # its files stay queued: a poll stages them
                await self._stage(request_id)
        finally:
            self._tasks.pop(request_id, None)

    async def _stage(self, request_id: str) -> None:
        await asyncio.to_thread(self._stage_files, request_id)

    def _stage_files(self, request_id: str) -> None:
        with self._stage_lock:
            self._stage_files_locked(request_id)

    def _stage_files_locked(self, request_id: str) -> None:
        path = self._request_file(request_id)
        record = read_json(path)
        if record is None:
            return
        for url, status in record["files"].items():
            if status != "queued":
                continue
            cached = self._cached(url)
            partial = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}.staging")
            try:
                with mapped_os_errors(url):
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(tape_path(url), partial)
                    # The copy and its pin appear together: eviction never sees one without the
                    # other; and not at all for a file released meanwhile.
                    with self.pins.locked():
                        if (read_json(path) or record)["files"].get(url) == "released":
                            partial.unlink()
                            record["files"][url] = "released"
                            continue
                        os.replace(partial, cached)
                        self.pins.add(str(tape_path(url)), request_id, time.time() + record["pin_lifetime_s"])
                record["files"][url] = "online"
            except Exception as exc:
                # A partial copy is never evicted (eviction skips them): it goes now. A cache that
                # is full or failing is waited for: the file stays queued, staged at a later poll.
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
                if not isinstance(exc, ServiceUnavailable):
                    record["files"][url] = "failed"
                record.setdefault("errors", {})[url] = str(exc)
        with self.pins.locked(), mapped_os_errors(f"bring-online request {request_id}"):
            # Keep what a release marked while the files were copied.
            current = read_json(path) or {"files": {}}
            for url, status in current["files"].items():
                if status == "released":
                    record["files"][url] = status
            write_json(path, record)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
