"""`cairn://` through fsspec, pandas and pyarrow: files opened by LFN from their best replica.

pandas, pyarrow and fsspec's sync API block while they wait for the API server, which runs on
this test's event loop, so every such call runs in a thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow.dataset as ds
import pytest

from cairn.sdk import Client
from dataio.fsspec_cairn import CairnFileSystem
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.test_upload_download_faults import flip_byte


def frame(rows: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"event": range(offset, offset + rows), "energy": [i * 0.5 for i in range(rows)],
                         "particle": ["proton" if i % 3 else "gamma" for i in range(rows)]})


@pytest.fixture
def options(api: RunningApi) -> dict[str, object]:
    return {"api_url": api.url, "token": api.admin_token, "skip_instance_cache": True}


async def test_the_entry_point_serves_the_cairn_protocol() -> None:
    assert fsspec.get_filesystem_class("cairn") is CairnFileSystem


@pytest.mark.parametrize("kind", ["file", "davs"])
async def test_pandas_reads_an_uploaded_parquet_file_by_lfn(
    live_ses: LiveSEs, admin: Client, options: dict[str, object], tmp_path: Path, kind: str
) -> None:
    se = await live_ses.add(kind)
    local = tmp_path / "events.parquet"
    frame(5000).to_parquet(local)
    [up] = await admin.upload([local], "/cta/mc/events.parquet", se.name)
    assert up.status == "uploaded", up.error
    read = await asyncio.to_thread(pd.read_parquet, "cairn:///cta/mc/events.parquet", storage_options=options)
    pd.testing.assert_frame_equal(read, frame(5000))


async def test_pyarrow_dataset_reads_a_directory_of_parquet_files(
    live_ses: LiveSEs, admin: Client, options: dict[str, object], tmp_path: Path
) -> None:
    se = await live_ses.add("root")
    for part in range(2):
        frame(100, offset=100 * part).to_parquet(tmp_path / f"part{part}.parquet")
    await admin.upload([tmp_path / "part0.parquet", tmp_path / "part1.parquet"], "/cta/ds", se.name)
    fs = CairnFileSystem(**options)

    def read() -> int:
        table = ds.dataset("/cta/ds", filesystem=fs, format="parquet").to_table(filter=ds.field("event") >= 150)
        return table.num_rows

    assert await asyncio.to_thread(read) == 50


async def test_ls_and_info_show_the_namespace(
    live_ses: LiveSEs, admin: Client, options: dict[str, object], tmp_path: Path
) -> None:
    se = await live_ses.add("file")
    (tmp_path / "a").write_bytes(b"abc")
    await admin.upload([tmp_path / "a"], "/cta/d/a", se.name)
    fs = CairnFileSystem(**options)
    listing = await asyncio.to_thread(fs.ls, "cairn:///cta/d", detail=True)
    assert [(e["name"], e["type"], e["size"]) for e in listing] == [("/cta/d/a", "file", 3)]
    assert await asyncio.to_thread(fs.isdir, "/cta")
    assert not await asyncio.to_thread(fs.exists, "/cta/none")
    with pytest.raises(FileNotFoundError):
        await asyncio.to_thread(fs.cat_file, "/cta/none")


async def test_a_whole_file_read_skips_a_corrupted_replica(
    live_ses: LiveSEs, admin: Client, api: RunningApi, tmp_path: Path
) -> None:
    near, far = await live_ses.add("file", site="HERE"), await live_ses.add("file", site="THERE")
    (tmp_path / "a").write_bytes(b"the right bytes" * 100)
    for se in (near, far):
        await admin.upload([tmp_path / "a"], "/cta/a", se.name)
    flip_byte(live_ses.stored_file(near.name, "/cta/a"), 3)
    fs = CairnFileSystem(api.url, api.admin_token, site="HERE", skip_instance_cache=True)
    assert await asyncio.to_thread(fs.cat_file, "/cta/a") == b"the right bytes" * 100
    flip_byte(live_ses.stored_file(far.name, "/cta/a"), 3)
    with pytest.raises(OSError, match="corrupted replica"):
        await asyncio.to_thread(fs.cat_file, "/cta/a")


async def test_it_is_read_only(options: dict[str, object], live_ses: LiveSEs) -> None:
    fs = CairnFileSystem(**options)
    with pytest.raises(NotImplementedError, match="read-only"):
        await asyncio.to_thread(fs.open, "/cta/new", "wb")


async def test_a_moved_file_is_read_by_its_new_lfn_from_where_its_bytes_are(
    live_ses: LiveSEs, admin: Client, options: dict[str, object], tmp_path: Path
) -> None:
    se = await live_ses.add("davs")
    local = tmp_path / "events.parquet"
    frame(300).to_parquet(local)
    [up] = await admin.upload([local], "/cta/raw/events.parquet", se.name)
    assert up.status == "uploaded", up.error
    await admin.mkdir("/cta/kept")
    await admin.move("/cta/raw/events.parquet", "/cta/kept/events.parquet")
    read = await asyncio.to_thread(pd.read_parquet, "cairn:///cta/kept/events.parquet", storage_options=options)
    pd.testing.assert_frame_equal(read, frame(300))
