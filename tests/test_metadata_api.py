"""Metadata, find, datasets, provenance, usage and SE dumps through the HTTP API and the SDK,
including Arrow and Parquet read back by pyarrow."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client, SyncClient
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, InvalidInput
from tests.fixtures.api import RunningApi


@pytest.fixture
async def loaded(admin: Client, catalogue_db: AsyncDatabase[Document]) -> Client:
    await admin.declare_field("run", "int")
    await admin.declare_field("taken", "datetime")
    files = [{"lfn": f"/cta/mc/f{i:02d}", "size": 1000 + i, "adler32": "0000abcd",
              "replicas": [{"se": "CERN-DISK"}] + ([{"se": "DESY-DISK"}] if i % 3 == 0 else []),
              "meta": {"run": i, "taken": f"2024-02-{i + 1:02d}T00:00:00Z"}} for i in range(25)]
    files.append({"lfn": "/cta/mc/derived", "size": 5, "adler32": "00000005", "ancestors": ["/cta/mc/f01"]})
    assert not (await admin.register_files(files))["failed"]
    await admin.set_metadata("/cta/mc", {"particle": "proton"})
    return admin


async def test_find_streams_json_with_inherited_metadata(loaded: Client) -> None:
    found = [f async for f in loaded.find("particle=proton run>=20 se=DESY-DISK")]
    assert [f["lfn"] for f in found] == ["/cta/mc/f21", "/cta/mc/f24"]
    assert found[0]["meta"]["particle"] == "proton" and found[0]["ses"] == ["CERN-DISK", "DESY-DISK"]
    page = [f async for f in loaded.find("run=Any", after="/cta/mc/f22", limit=5)]
    assert [f["lfn"] for f in page] == ["/cta/mc/f23", "/cta/mc/f24"]


async def test_a_bad_query_is_a_400_with_the_position(loaded: Client) -> None:
    with pytest.raises(InvalidInput) as caught:
        [f async for f in loaded.find("(run=1 or run=2")]
    assert caught.value.details["position"] == 0 and "never closed" in caught.value.message
    with pytest.raises(InvalidInput, match="int"):
        [f async for f in loaded.find("run=abc")]


async def test_find_as_parquet_and_arrow_reads_back_with_pyarrow(loaded: Client, tmp_path: Path) -> None:
    await loaded.find_to_file("run<10", tmp_path / "out.parquet", format="parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 10
    assert table.column("lfn").to_pylist()[0] == "/cta/mc/f00"
    assert table.column("meta_run").to_pylist() == list(range(10))
    assert table.column("meta_taken").to_pylist()[1] == dt.datetime(2024, 2, 2, tzinfo=dt.UTC)
    assert table.column("size").type == pa.int64()
    await loaded.find_to_file("run=Any", tmp_path / "out.arrows", format="arrow")
    with pa.ipc.open_stream((tmp_path / "out.arrows").read_bytes()) as reader:
        streamed = reader.read_all()
    assert streamed.num_rows == 25 and "particle" in streamed.column("meta").to_pylist()[0]


async def test_metadata_set_get_and_type_errors(loaded: Client) -> None:
    got = await loaded.set_metadata("/cta/mc/f03", {"run": "33", "note": "x"})
    assert got["own"] == {"run": 33, "note": "x", "taken": "2024-02-04T00:00:00+00:00"}
    assert got["effective"]["particle"] == "proton"
    assert got["origin"]["particle"] == "/cta/mc"
    with pytest.raises(InvalidInput, match="run"):
        await loaded.set_metadata("/cta/mc/f03", {"run": "thirty"})
    assert (await loaded.get_metadata("/cta/mc/f03"))["own"]["run"] == 33
    removed = await loaded.remove_metadata("/cta/mc/f03", ["note"])
    assert "note" not in removed["effective"]
    assert [f["key"] for f in await loaded.list_fields()] == ["run", "taken"]


async def test_only_admins_declare_fields(api: RunningApi, loaded: Client) -> None:
    async with api.client(api.token()) as alice:
        with pytest.raises(Forbidden):
            await alice.declare_field("energy", "float")


async def test_datasets_over_the_api_with_parquet_contents(loaded: Client, tmp_path: Path) -> None:
    await loaded.create_did("cta:raw")
    result = await loaded.attach("cta:raw", lfns=[f"/cta/mc/f{i:02d}" for i in range(5)])
    assert len(result["successful"]) == 5
    shown = await loaded.get_did("cta:raw")
    assert (shown["files"], shown["bytes"], shown["state"]) == (5, 5010, "open")
    await loaded.set_did_state("cta:raw", "freeze")
    with pytest.raises(Conflict, match="frozen"):
        await loaded.attach("cta:raw", lfns=["/cta/mc/f09"])
    await loaded.did_contents_to_file("cta:raw", tmp_path / "raw.parquet")
    assert pq.read_table(tmp_path / "raw.parquet").column("size").to_pylist() == [1000, 1001, 1002, 1003, 1004]
    dynamic = await loaded.create_did("cta:late", query="run>=22")
    assert dynamic["files"] == 3 and dynamic["dynamic"]
    await loaded.create_did("cta:all", type="container")
    await loaded.attach("cta:all", children=["cta:raw", "cta:late"])
    assert [m["did"] async for m in loaded.did_contents("cta:all")] == ["cta:late", "cta:raw"]
    await loaded.create_did("cta:outer", type="container")
    await loaded.attach("cta:outer", children=["cta:all"])
    with pytest.raises(Conflict, match="cycle"):
        await loaded.attach("cta:all", children=["cta:outer"])
    page = await loaded.did_contents_page("cta:late", limit=2)
    assert [m["lfn"] for m in page["members"]] == ["/cta/mc/f22", "/cta/mc/f23"] and page["next_after"]


async def test_provenance_both_ways(loaded: Client) -> None:
    await loaded.link_ancestors("/cta/mc/f01", ["/cta/mc/f00"])
    up = await loaded.provenance("/cta/mc/derived", depth=5)
    assert [(f["lfn"], f["depth"]) for f in up["files"]] == [("/cta/mc/f01", 1), ("/cta/mc/f00", 2)]
    down = await loaded.provenance("/cta/mc/f00", direction="descendants", depth=1)
    assert [f["lfn"] for f in down["files"]] == ["/cta/mc/f01"]
    down = await loaded.provenance("/cta/mc/f00", direction="descendants", depth=3)
    assert [f["lfn"] for f in down["files"]] == ["/cta/mc/f01", "/cta/mc/derived"]


async def test_usage_and_se_dump(loaded: Client, tmp_path: Path) -> None:
    assert await loaded.directory_usage("/cta") == {"path": "/cta", "files": 26,
                                                    "bytes": sum(1000 + i for i in range(25)) + 5}
    per_se = {u["se"]: u for u in await loaded.se_usage()}
    assert per_se["DESY-DISK"]["replicas"] == 9
    assert (await loaded.rebuild_usage(fix=False))["drifted"] == 0
    await loaded.se_dump_to_file("DESY-DISK", tmp_path / "dump.parquet")
    dump = pq.read_table(tmp_path / "dump.parquet")
    assert dump.column("lfn").to_pylist() == [f"/cta/mc/f{i:02d}" for i in range(0, 25, 3)]
    assert set(dump.column("se").to_pylist()) == {"DESY-DISK"}
    rows = [r async for r in loaded.se_dump("DESY-DISK")]
    assert rows[0]["url"].startswith("s3://")


async def test_sync_client_has_the_calls(api: RunningApi, loaded: Client) -> None:
    def use() -> list[str]:
        with SyncClient(api.url, api.admin_token) as client:
            return [f["lfn"] for f in client.find("run<2")]

    assert await asyncio.to_thread(use) == ["/cta/mc/f00", "/cta/mc/f01"]


async def test_bad_input_is_a_4xx_with_a_message_and_changes_nothing(api: RunningApi, loaded: Client) -> None:
    headers = {"Authorization": f"Bearer {api.admin_token}"}
    async with aiohttp.ClientSession(base_url=api.url, headers=headers) as http:
        async with http.post("/api/v1/find", json={"query": "run=1 or (run=2"}) as resp:
            body = await resp.json()
            assert resp.status == 400 and body["code"] == "invalid_query" and body["details"]["position"] == 9
        async with http.post("/api/v1/find", json={"query": "run=1", "format": "xml"}) as resp:
            assert resp.status == 400
        async with http.post("/api/v1/metadata/set", json={"path": "/cta/mc/f01", "values": {"ok": 1, "run": "x"}}
                             ) as resp:
            assert resp.status == 400 and "run" in (await resp.json())["message"]
        async with http.post("/api/v1/dids", json={"did": "cta:q", "query": "run >> 1"}) as resp:
            assert resp.status == 400
        async with http.get("/api/v1/dids", params={"did": "cta:q"}) as resp:
            assert resp.status == 404
        async with http.post("/api/v1/dids/attach", json={"did": "cta:none", "lfns": ["/cta/mc/f01"]}) as resp:
            assert resp.status == 404
    assert "ok" not in (await loaded.get_metadata("/cta/mc/f01"))["own"]


async def test_an_empty_result_is_a_valid_empty_parquet_file(loaded: Client, tmp_path: Path) -> None:
    await loaded.find_to_file("run>1000", tmp_path / "none.parquet")
    table = pq.read_table(tmp_path / "none.parquet")
    assert table.num_rows == 0 and "meta_run" in table.column_names
