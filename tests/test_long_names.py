"""A file whose name is as long as an LFN segment may be (255 bytes) is uploaded to, copied to
and downloaded from a local-disk SE: its partial file (`.NAME.cairn-part-XXXXXXXX`, renamed
over it when complete) stays within the file system's 255 bytes per name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.sdk import Client
from catalogue.lfn import MAX_SEGMENT
from storage_plugins.base import partial_name
from storage_plugins.posix import PosixPlugin, file_url
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload


@pytest.mark.parametrize("length", [236, 237, MAX_SEGMENT])
async def test_a_file_with_a_name_of_the_longest_segment_goes_up_and_down(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path, length: int
) -> None:
    se = await live_ses.add("file")
    name = "n" * length
    data = payload(3 << 20)  # streamed through write() (more than a small file's one-step copy)
    small = payload(10)
    big_local, small_local = tmp_path / "big" / name, tmp_path / "small" / name
    for local, source in ((big_local, data), (small_local, small)):
        local.parent.mkdir()
        local.write_bytes(source.path.read_bytes())
    [up] = await admin.upload([big_local], "/cta/big/", se.name)
    [up_small] = await admin.upload([small_local], "/cta/small/", se.name)
    assert (up.status, up_small.status) == ("uploaded", "uploaded"), (up.error, up_small.error)
    [down] = await admin.download([f"/cta/big/{name}"], tmp_path / name)
    assert down.status == "downloaded", down.error
    assert (tmp_path / name).read_bytes() == data.path.read_bytes()
    target = tmp_path / "se" / name
    target.parent.mkdir()
    async with PosixPlugin() as plugin:
        [result] = await plugin.put_many([(small.path, file_url(target), None)])
    assert not isinstance(result, Exception), result
    assert target.read_bytes() == small.path.read_bytes()


def test_a_partial_name_keeps_whole_characters_within_255_bytes() -> None:
    for name in ("a" * 255, "é" * 127, "x"):
        partial = partial_name(name)
        assert len(partial.encode()) <= 255 and partial.startswith(".") and ".cairn-part-" in partial
        partial.encode().decode()  # no character cut in half
