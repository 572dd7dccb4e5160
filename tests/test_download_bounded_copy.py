"""A root:// download through gfal2's own copy is bounded by the file's registered size, also
when the stored object is replaced by a much bigger one after its size was asked."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import dataio.download
from cairn.sdk import Client
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload

REPLACEMENT = 1 << 30  # what the object becomes between the size check and the copy
BOUND = 64 << 20  # what may land at most: the file's 1 MiB and what arrives before the copy is stopped


def _largest_in(directory: Path) -> int:
    with os.scandir(directory) as entries:
        return max((entry.stat().st_size for entry in entries if entry.is_file()), default=0)


async def test_an_object_replaced_by_a_bigger_one_after_its_size_check_stops_the_copy_at_the_size(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    se = await live_ses.add("root")
    data = payload(1 << 20)
    up = (await admin.upload([data.path], "/cta/grows", se.name))[0]
    assert up.status == "uploaded", up.error
    stored = live_ses.stored_file(se.name, "/cta/grows")

    async def replace(_url: str) -> None:
        bigger = stored.with_name("bigger")
        with bigger.open("wb") as handle:
            handle.truncate(REPLACEMENT)  # sparse: costs the test bed no disk
        bigger.replace(stored)

    monkeypatch.setattr(dataio.download, "SIZE_CHECKED", [replace])
    into = tmp_path / "down"
    into.mkdir()
    largest = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal largest
        while not done.is_set():
            largest = max(largest, await asyncio.to_thread(_largest_in, into))
            await asyncio.sleep(0.002)

    watcher = asyncio.ensure_future(watch())
    try:
        down = (await admin.download(["/cta/grows"], into / "f"))[0]
    finally:
        done.set()
        await watcher
    assert down.status == "failed" and "corrupted replica" in (down.error or ""), down
    assert not (into / "f").exists() and _largest_in(into) == 0
    assert largest <= BOUND, f"{largest} bytes landed on the reader's disk"
    # The cancelled copy's thread serves the next copies as before (its gfal2 context was renewed).
    monkeypatch.setattr(dataio.download, "SIZE_CHECKED", [])
    small = payload(1000)
    lfns = [f"/cta/after{index}" for index in range(12)]
    for lfn in lfns:
        assert (await admin.upload([small.path], lfn, se.name))[0].status == "uploaded"
    downs = await admin.download(lfns, tmp_path / "again/", concurrency=12)
    assert [d.status for d in downs] == ["downloaded"] * 12, [d.error for d in downs]
