"""`tape:///path` URLs: a directory standing for a tape library, behind a disk cache.

Writes go straight to "tape" (the directory). Reads are refused with NotOnline until a
bring-online request has staged the file into the disk cache, which takes `stage_delay_s`;
a staged copy is pinned for a lifetime and evicted once every pin on it has expired. State
(requests, pins) lives in files under the cache directory, so a stager in another process,
or after a restart, sees and completes the same requests.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
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

from kernel.errors import InvalidInput, NotFound
from storage_plugins.base import FileInfo, PluginOptions, StoragePlugin, WriteResult
from storage_plugins.errors import NotOnline
from storage_plugins.posix import PosixPlugin, file_url, mapped_os_errors

StageStatus = Literal["queued", "online", "failed", "evicted"]


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
    return Path(path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


class TapePlugin(StoragePlugin):
    """A tape library simulated by a directory, with staging, pins and eviction."""

    schemes = ("tape",)
    Options = TapeOptions
    options: TapeOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.cache = Path(self.options.cache_dir)
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

    def _pin_file(self, url: str) -> Path:
        digest = hashlib.sha1(str(tape_path(url)).encode()).hexdigest()
        return self.cache / "pins" / f"{digest}.json"

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
        await asyncio.to_thread(self._evict, url)

    async def mkdir(self, url: str) -> None:
        await self._disk.mkdir(self._on_tape(url))

    async def checksum(self, url: str) -> str:
        # A tape system keeps checksums in its namespace; reading it costs no staging.
        return await self._disk.checksum(self._on_tape(url))

    # -- disk cache ---------------------------------------------------------------------------
    async def is_online(self, url: str) -> bool:
        """Whether url has a staged copy under a pin that has not expired."""
        await self.evict_expired()
        pin = await asyncio.to_thread(_read_json, self._pin_file(url))
        return (
            pin is not None
            and pin["expires"] > time.time()
            and await aiofiles.os.path.exists(self._cached(url))
        )

    async def read(self, url: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if not await self.is_online(url):
            await self.stat(url)  # NotFound for a file that is not on tape at all
            raise NotOnline(f"{url}: on tape only; issue a bring-online request and wait until it is online")
        async for chunk in self._disk.read(file_url(self._cached(url)), offset=offset, length=length):
            yield chunk

    async def bring_online(self, urls: builtins.list[str], *, pin_lifetime_s: float | None = None) -> str:
        """Ask for files to be staged to disk; returns the request id to poll."""
        if not urls:
            raise InvalidInput("a bring-online request needs at least one file")
        for url in urls:
            info = await self.stat(url)
            if info.is_dir:
                raise InvalidInput(f"{url}: is a directory; bring files online, not directories")
        await self.evict_expired()
        request_id = uuid.uuid4().hex
        now = time.time()
        record = {
            "id": request_id,
            "files": {url: "queued" for url in urls},
            "created": now,
            "ready_at": now + self.options.stage_delay_s,
            "pin_lifetime_s": pin_lifetime_s or self.options.pin_lifetime_s,
        }
        await asyncio.to_thread(_write_json, self._request_file(request_id), record)
        self._tasks[request_id] = asyncio.create_task(self._stage_later(request_id))
        return request_id

    async def poll_bring_online(self, request_id: str) -> dict[str, StageStatus]:
        """The status of each file of a request: queued, online, failed, or evicted (its pin ended)."""
        record = await asyncio.to_thread(_read_json, self._request_file(request_id))
        if record is None:
            raise NotFound(f"tape bring-online request {request_id}: no such request")
        if time.time() >= record["ready_at"] and "queued" in record["files"].values():
            # The drive time is over but the files are not staged yet: the delayed task is late
            # (a loaded machine) or belongs to a process that died. Stage them now.
            await self._stage(request_id)
            record = await asyncio.to_thread(_read_json, self._request_file(request_id)) or record
        statuses: dict[str, StageStatus] = {}
        for url, status in record["files"].items():
            if status == "online" and not await self.is_online(url):
                status = "evicted"  # staged, then its pin expired or was released
            statuses[url] = status
        return statuses

    async def release(self, url: str) -> None:
        """Drop the pin on url; its cached copy goes at the next eviction."""
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self._pin_file(url))
        await self.evict_expired()

    async def evict_expired(self) -> builtins.list[str]:
        """Remove staged copies whose pins have expired (or were released); returns their URLs."""
        return await asyncio.to_thread(self._evict_expired)

    def _evict_expired(self) -> builtins.list[str]:
        evicted: builtins.list[str] = []
        now = time.time()
        files = self.cache / "files"
        if not files.is_dir():
            return evicted
        for root, _dirs, names in os.walk(files):
            for name in names:
                url = "tape:///" + Path(root, name).relative_to(files).as_posix()
                pin = _read_json(self._pin_file(url))
                if pin is None or pin["expires"] <= now:
                    self._evict(url)
                    evicted.append(url)
        return evicted

    def _evict(self, url: str) -> None:
        self._cached(url).unlink(missing_ok=True)
        self._pin_file(url).unlink(missing_ok=True)

    async def _stage_later(self, request_id: str) -> None:
        try:
            await asyncio.sleep(self.options.stage_delay_s)
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
        record = _read_json(path)
        if record is None:
            return
        expires = time.time() + record["pin_lifetime_s"]
        for url, status in record["files"].items():
            if status != "queued":
                continue
            cached = self._cached(url)
            try:
                with mapped_os_errors(url):
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    partial = cached.with_name(f".{cached.name}.staging")
                    shutil.copyfile(tape_path(url), partial)
                    os.replace(partial, cached)
                pin = _read_json(self._pin_file(url))
                _write_json(
                    self._pin_file(url), {"url": url, "expires": max(expires, (pin or {}).get("expires", 0))}
                )
                record["files"][url] = "online"
            except Exception as exc:
                record["files"][url] = "failed"
                record.setdefault("errors", {})[url] = str(exc)
        _write_json(path, record)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
