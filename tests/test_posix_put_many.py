"""A disk SE's one-thread copies of small files (`PosixPlugin.put_many`, what `cairn upload` uses):
each lands whole, with its checksum, through a hidden partial file; one that fails leaves
nothing, neither the partial file nor anything over what was at its path; big files go in
chunks; the others of the call go on."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from storage_plugins.errors import ChecksumMismatch
from storage_plugins.posix import PosixPlugin, file_url


def _adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


async def test_copies_land_whole_and_a_mismatch_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "se"
    plugin = PosixPlugin({"root": str(root), "chunk_size": 4096})
    sources = {name: tmp_path / name for name in ("small", "chunked", "changed")}
    payloads = {"small": b"payload", "chunked": os.urandom(3 * 4096 + 17), "changed": b"as registered"}
    for name, path in sources.items():
        path.write_bytes(payloads[name])
    (root / "d").mkdir(parents=True)
    (root / "d" / "changed").write_bytes(b"what was there before")
    sources["changed"].write_bytes(b"changed since its sum")  # the local file changed after it was summed
    results = await plugin.put_many([(sources[name], file_url(root / "d" / name), _adler32(payloads[name]))
                                     for name in ("small", "chunked", "changed")])
    small, chunked, changed = results
    assert (small.size, small.adler32) == (7, _adler32(b"payload"))  # type: ignore[union-attr]
    assert (chunked.size, chunked.adler32) == (3 * 4096 + 17, _adler32(payloads["chunked"]))  # type: ignore[union-attr]
    assert isinstance(changed, ChecksumMismatch)
    assert (root / "d" / "small").read_bytes() == b"payload"
    assert (root / "d" / "chunked").read_bytes() == payloads["chunked"]
    assert (root / "d" / "changed").read_bytes() == b"what was there before"
    assert sorted(p.name for p in (root / "d").iterdir()) == ["changed", "chunked", "small"]  # no partial file


async def test_a_copy_replaces_a_file_at_its_path_and_a_missing_source_fails_alone(tmp_path: Path) -> None:
    root = tmp_path / "se"
    plugin = PosixPlugin({"root": str(root)})
    (root / "d").mkdir(parents=True)
    (root / "d" / "old").write_bytes(b"old bytes")
    source = tmp_path / "new"
    source.write_bytes(b"new bytes")
    moved, missing = await plugin.put_many([(source, file_url(root / "d" / "old"), _adler32(b"new bytes")),
                                            (tmp_path / "gone", file_url(root / "d" / "gone"), None)])
    assert (root / "d" / "old").read_bytes() == b"new bytes" and moved.size == 9  # type: ignore[union-attr]
    assert type(missing).__name__ == "NotFound"
    assert sorted(p.name for p in (root / "d").iterdir()) == ["old"]
