"""The tape plugin: reads only after a bring-online request has staged the file, pins, eviction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kernel.errors import InvalidInput, NotFound
from storage_plugins.errors import NotOnline
from storage_plugins.registry import plugin_for
from storage_plugins.tape import TapePlugin
from tests.fixtures.payloads import BIG_SIZE, Payload, adler32_of_file


def _tape(tmp_path: Path, **options: Any) -> TapePlugin:
    plugin = plugin_for("tape:///", {"cache_dir": str(tmp_path / "cache"), **options})
    assert isinstance(plugin, TapePlugin)
    return plugin


async def _wait_online(tape: TapePlugin, request_id: str, timeout_s: float = 10) -> dict[str, str]:
    async with asyncio.timeout(timeout_s):
        while True:
            statuses: dict[str, str] = dict(await tape.poll_bring_online(request_id))
            if all(status != "queued" for status in statuses.values()):
                return statuses
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("size", [0, 1, BIG_SIZE], ids=["0B", "1B", "100MiB"])
async def test_round_trip_through_staging(
    tmp_path: Path, payload: Callable[[int], Payload], size: int
) -> None:
    tape, data = _tape(tmp_path, stage_delay_s=0.1), payload(size)
    url = f"tape://{tmp_path}/tape/run1/file"
    assert (await tape.put(data.path, url)).adler32 == data.adler32
    assert await tape.checksum(url) == data.adler32
    request = await tape.bring_online([url])
    assert await _wait_online(tape, request) == {url: "online"}
    got = await tape.get(url, tmp_path / "back", expected_adler32=data.adler32)
    assert got.size == size and adler32_of_file(tmp_path / "back") == data.adler32


async def test_read_is_refused_until_the_staging_delay_has_passed(tmp_path: Path) -> None:
    tape = _tape(tmp_path, stage_delay_s=0.5)
    url = f"tape://{tmp_path}/tape/f"
    await tape.write(url, _chunks(b"on tape"))
    with pytest.raises(NotOnline) as caught:
        await tape.get(url, tmp_path / "early")
    assert url in caught.value.message
    request = await tape.bring_online([url])
    assert await tape.poll_bring_online(request) == {url: "queued"}
    with pytest.raises(NotOnline):
        await tape.get(url, tmp_path / "early")
    await asyncio.sleep(0.7)
    assert await tape.poll_bring_online(request) == {url: "online"}
    assert b"".join([chunk async for chunk in tape.read(url)]) == b"on tape"


async def test_expired_pin_evicts_the_staged_copy(tmp_path: Path) -> None:
    tape = _tape(tmp_path, stage_delay_s=0, pin_lifetime_s=0.3)
    url = f"tape://{tmp_path}/tape/f"
    await tape.write(url, _chunks(b"x"))
    request = await tape.bring_online([url])
    await _wait_online(tape, request)
    assert await tape.is_online(url)
    await asyncio.sleep(0.4)
    assert await tape.evict_expired() == [url]
    assert not (tmp_path / "cache" / "files" / str(tmp_path).lstrip("/") / "tape" / "f").exists()
    assert await tape.poll_bring_online(request) == {url: "evicted"}
    with pytest.raises(NotOnline):
        await tape.get(url, tmp_path / "late")


async def test_a_longer_pin_keeps_the_copy_when_a_shorter_one_ends(tmp_path: Path) -> None:
    tape = _tape(tmp_path, stage_delay_s=0)
    url = f"tape://{tmp_path}/tape/f"
    await tape.write(url, _chunks(b"x"))
    await _wait_online(tape, await tape.bring_online([url], pin_lifetime_s=60))
    await _wait_online(tape, await tape.bring_online([url], pin_lifetime_s=0.1))
    await asyncio.sleep(0.2)
    assert await tape.evict_expired() == []
    assert await tape.is_online(url)


async def test_release_lets_the_copy_go(tmp_path: Path) -> None:
    tape = _tape(tmp_path, stage_delay_s=0)
    url = f"tape://{tmp_path}/tape/f"
    await tape.write(url, _chunks(b"x"))
    await _wait_online(tape, await tape.bring_online([url]))
    await tape.release(url)
    assert not await tape.is_online(url)


async def test_each_request_pins_on_its_own_and_the_copy_goes_with_the_last_pin(tmp_path: Path) -> None:
    tape = _tape(tmp_path, stage_delay_s=0)
    url = f"tape://{tmp_path}/tape/f"
    await tape.write(url, _chunks(b"x"))
    first, second = await tape.bring_online([url]), await tape.bring_online([url])
    await _wait_online(tape, first)
    await _wait_online(tape, second)
    assert await tape.release(url, request_id=first) is True
    assert await tape.release(url, request_id=first) is True  # twice: nothing more goes
    assert await tape.is_online(url) and await tape.poll_bring_online(second) == {url: "online"}
    assert await tape.release(url, request_id=second) is False
    assert not await tape.is_online(url)
    assert await tape.poll_bring_online(first) == {url: "evicted"}
    assert not (tmp_path / "cache" / "files" / str(tmp_path).lstrip("/") / "tape" / "f").exists()


async def test_a_release_naming_no_possible_request_is_refused_and_keeps_the_pin(tmp_path: Path) -> None:
    tape = _tape(tmp_path, stage_delay_s=0)
    url = f"tape://{tmp_path}/tape/f"
    await tape.write(url, _chunks(b"x"))
    await _wait_online(tape, await tape.bring_online([url]))
    with pytest.raises(InvalidInput):
        await tape.release(url, request_id="../../pins")
    assert await tape.is_online(url)


async def test_pins_taken_and_released_at_once_from_two_plugins_on_one_cache_are_never_lost(tmp_path: Path) -> None:
    # As a stager and transfer workers in separate processes do: one cache directory, many pins.
    stager, worker = _tape(tmp_path, stage_delay_s=0), _tape(tmp_path, stage_delay_s=0)
    url = f"tape://{tmp_path}/tape/f"
    await stager.write(url, _chunks(b"shared"))
    requests = await asyncio.gather(*(plugin.bring_online([url]) for plugin in [stager, worker] * 15))
    await asyncio.gather(*(_wait_online(stager, request) for request in requests))
    assert set(stager.pins.live(f"{tmp_path}/tape/f")) == set(requests)
    keep, *done = requests
    await asyncio.gather(*(plugin.release(url, request_id=request)
                           for plugin, request in zip([worker, stager] * 15, done, strict=False)))
    assert set(worker.pins.live(f"{tmp_path}/tape/f")) == {keep}
    assert b"".join([chunk async for chunk in worker.read(url)]) == b"shared"


async def test_a_request_left_by_a_dead_stager_completes_when_polled(tmp_path: Path) -> None:
    options = {"cache_dir": str(tmp_path / "cache"), "stage_delay_s": 0.2}
    first = TapePlugin(options)
    url = f"tape://{tmp_path}/tape/f"
    await first.write(url, _chunks(b"survives"))
    request = await first.bring_online([url])
    await first.close()  # its staging task dies with it
    second = TapePlugin(options)
    await asyncio.sleep(0.3)
    assert await second.poll_bring_online(request) == {url: "online"}
    assert b"".join([chunk async for chunk in second.read(url)]) == b"survives"


async def test_bring_online_of_a_missing_file_is_not_found(tmp_path: Path) -> None:
    tape = _tape(tmp_path)
    with pytest.raises(NotFound):
        await tape.bring_online([f"tape://{tmp_path}/tape/none"])


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
