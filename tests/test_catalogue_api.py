"""The catalogue over HTTP through the SDK: every call answers as the Python API does."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client, SyncClient
from kernel.db import Document
from kernel.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from kernel.settings import Settings
from tests.fixtures.api import RunningApi, api_on


@pytest.fixture
async def ready(api: RunningApi, catalogue_db: AsyncDatabase[Document], admin: Client) -> Client:
    await admin.register_files([
        {"lfn": f"/cta/mc/f{i}", "size": i, "adler32": "0000000a", "replicas": [{"se": "CERN-DISK"}]}
        for i in range(3)
    ])
    return admin


async def test_register_answers_successful_and_failed(ready: Client) -> None:
    result = await ready.register_files([
        {"lfn": "/cta/mc/f0", "size": 0, "adler32": "0000000a"},
        {"lfn": "/cta/mc/f1", "size": 99, "adler32": "0000000a"},
        {"lfn": "/cta/mc/new", "size": 5, "adler32": "ABCDEF01", "md5": "0" * 32, "guid": "g-new"},
    ])
    assert result["successful"]["/cta/mc/f0"]["created"] is False
    assert result["successful"]["/cta/mc/new"] == {"guid": "g-new", "created": True}
    assert "size" in result["failed"]["/cta/mc/f1"]
    assert (await ready.get_file("/cta/mc/new"))["adler32"] == "abcdef01"


async def test_namespace_calls(ready: Client) -> None:
    await ready.mkdir("/cta/mc/sub/deeper", parents=True)
    page = await ready.ls_page("/cta/mc", limit=2)
    assert [e["name"] for e in page["entries"]] == ["f0", "f1"] and page["next_after"] == "f1"
    rest = await ready.ls_page("/cta/mc", after="f1")
    assert [e["name"] for e in rest["entries"]] == ["f2", "sub"] and rest["next_after"] is None
    assert [e["name"] async for e in ready.ls("/cta/mc")] == ["f0", "f1", "f2", "sub"]
    await ready.move("/cta/mc/sub", "/cta/mc/moved")
    assert (await ready.stat("/cta/mc/moved/deeper"))["parent"] == "/cta/mc/moved"
    assert (await ready.chmod("/cta/mc/moved", 0o750))["mode"] == 0o750
    assert (await ready.chown("/cta/mc/moved", group="cta"))["group"] == "cta"
    with pytest.raises(Conflict):
        await ready.remove("/cta/mc/moved")
    assert (await ready.remove("/cta/mc/moved", recursive=True))["removed"] == 2
    with pytest.raises(NotFound):
        await ready.stat("/cta/mc/moved")


async def test_replica_calls(ready: Client) -> None:
    added = await ready.add_replicas([{"lfn": "/cta/mc/f0", "se": "DESY-DISK"},
                                      {"lfn": "/cta/mc/no", "se": "DESY-DISK"}])
    assert added["successful"] == {"/cta/mc/f0": ["DESY-DISK"]} and added["failed"] == {"/cta/mc/no": "no such file"}
    await ready.set_replica_status("/cta/mc/f0", "CERN-DISK", "bad", expected="available")
    with pytest.raises(Conflict):
        await ready.set_replica_status("/cta/mc/f0", "CERN-DISK", "available", expected="copying")
    with pytest.raises(NotFound):
        await ready.set_replica_status("/cta/mc/f0", "CERN-TAPE", "bad")
    resolved = await ready.get_replicas(["/cta/mc/f0", "/cta/mc/f1", "/cta/mc/none"], active=True)
    assert [r["se"] for r in resolved["successful"]["/cta/mc/f0"]] == ["DESY-DISK"]
    assert resolved["failed"] == {"/cta/mc/none": "no such file"}
    removed = await ready.remove_replicas([{"lfn": "/cta/mc/f1", "se": "CERN-DISK"}])
    assert removed["successful"] == {"/cta/mc/f1": ["CERN-DISK"]}
    assert (await ready.remove_files(["/cta/mc/f1", "/cta/mc/f2"]))["failed"]["/cta/mc/f2"].startswith("file still")
    assert (await ready.remove_files(["/cta/mc/f2"], force=True))["successful"] == {"/cta/mc/f2": {"removed": True}}


async def test_bulk_status_changes_and_lookups_answer_per_lfn(ready: Client) -> None:
    await ready.set_replica_status("/cta/mc/f1", "CERN-DISK", "copying")
    changed = await ready.set_replica_statuses([
        {"lfn": "/cta/mc/f0", "se": "CERN-DISK", "status": "bad", "expected": "copying"},
        {"lfn": "/cta/mc/f1", "se": "CERN-DISK", "status": "available", "expected": "copying"},
        {"lfn": "/cta/mc/f2", "se": "CERN-TAPE", "status": "bad"},
        {"lfn": "/cta/mc/none", "se": "CERN-DISK", "status": "bad"},
    ])
    assert changed["successful"] == {"/cta/mc/f1": "available"}
    assert changed["failed"] == {"/cta/mc/f0": "replica of /cta/mc/f0 on CERN-DISK is 'available', not 'copying'",
                                 "/cta/mc/f2": "/cta/mc/f2 has no replica on CERN-TAPE",
                                 "/cta/mc/none": "no such file"}
    found = await ready.lookup_files(["/cta/mc/f0", "/cta/mc/f1", "/cta/mc/none"])
    assert {lfn: [r["status"] for r in f["replicas"]] for lfn, f in found["successful"].items()} == {
        "/cta/mc/f0": ["available"], "/cta/mc/f1": ["available"]}
    assert found["successful"]["/cta/mc/f1"] == await ready.get_file("/cta/mc/f1")
    assert found["failed"] == {"/cta/mc/none": "no such file"}
    assert await ready.lookup_files(["/cta/mc/f0", "/cta/mc/f1", "/cta/mc/none"], chunk=2) == found
    with pytest.raises(InvalidInput, match="one replica per LFN"):
        await ready.set_replica_statuses([{"lfn": "/cta/mc/f0", "se": "CERN-DISK", "status": "bad"}] * 2)


async def test_ses_and_sites_crud(ready: Client) -> None:
    se = await ready.get_se("CERN-DISK")
    se.update(name="PIC-DISK", site="PIC")
    await ready.put_se(se)
    site = await ready.get_site("PIC")
    assert [s["name"] for s in site["ses"]] == ["PIC-DISK"]
    await ready.put_site("PIC", description="Port d'Informacio Cientifica", attributes={"tier": 1})
    assert (await ready.get_site("PIC"))["attributes"] == {"tier": 1}
    updated = await ready.update_se("PIC-DISK", write_enabled=False, space={"total_bytes": 100, "used_bytes": 40})
    assert updated["write_enabled"] is False and updated["space"]["used_bytes"] == 40
    assert {s["name"] for s in await ready.list_ses(site="CERN")} == {"CERN-DISK", "CERN-TAPE"}
    with pytest.raises(Conflict):
        await ready.delete_site("PIC")
    with pytest.raises(Conflict, match="holds replicas"):
        await ready.delete_se("CERN-DISK")
    await ready.delete_se("PIC-DISK")
    await ready.delete_site("PIC")
    assert "PIC" not in {s["name"] for s in await ready.list_sites()}


async def test_sync_client_offers_the_same_calls(ready: Client) -> None:
    def use() -> tuple[int, list[str]]:
        with SyncClient(ready.url, ready.token) as client:
            return client.stat("/cta/mc/f0")["size"], [e["name"] for e in client.ls("/cta/mc")]

    # The server runs on the test's event loop, so the blocking client runs in a thread.
    assert await asyncio.to_thread(use) == (0, ["f0", "f1", "f2"])


async def test_every_catalogue_route_is_in_the_openapi_document_with_a_policy(api: RunningApi) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/v1/openapi.json") as resp:
        paths = (await resp.json())["paths"]
    for path in ("/namespace/mkdir", "/namespace/ls", "/namespace/ls/stream", "/namespace/stat", "/namespace/move",
                 "/namespace/remove", "/namespace/chmod", "/namespace/chown", "/files/register", "/files",
                 "/files/remove", "/replicas/resolve", "/replicas/add", "/replicas/remove", "/replicas/status",
                 "/ses/{name}", "/sites", "/sites/{name}"):
        ops = paths["/api/v1" + path]
        assert all(op["x-cairn-policy"] for op in ops.values()), path
    assert paths["/api/v1/ses/{name}"]["delete"]["x-cairn-policy"] == "admin"


async def test_a_big_directory_streams_in_order_across_batches(ready: Client) -> None:
    await ready.register_files([{"lfn": f"/cta/big/f{i:05d}", "size": 1, "adler32": "00000001"} for i in range(2500)])
    names = [e["name"] async for e in ready.ls("/cta/big")]
    assert names == [f"f{i:05d}" for i in range(2500)]
    tail = [e["name"] async for e in ready.ls("/cta/big", after="f02497")]
    assert tail == ["f02498", "f02499"]


async def test_catalogue_routes_answer_503_with_retry_after_when_the_database_is_down(settings: Settings) -> None:
    from cairn.embedded_db import free_port

    dead = api_on(settings, mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/", db_timeout_ms=300)
    async with dead as (url, token), Client(url, token, ride_out_s=0) as client:  # told at once
        with pytest.raises(ServiceUnavailable) as caught:
            await client.register_files([{"lfn": "/cta/x", "size": 1, "adler32": "00000001"}])
        assert caught.value.retry_after >= 1
        with pytest.raises(ServiceUnavailable):
            await client.stat("/cta")


async def test_a_batch_of_ten_thousand_registers_and_registers_again_idempotently(ready: Client) -> None:
    files = [{"lfn": f"/cta/bulk/d{i % 10}/f{i:05d}", "size": i, "adler32": f"{i:08x}",
              "replicas": [{"se": "CERN-DISK"}, {"se": "DESY-DISK"}]} for i in range(10_000)]
    first = await ready.register_files(files)
    assert len(first["successful"]) == 10_000 and first["failed"] == {}
    again = await ready.register_files(files)
    assert not any(v["created"] for v in again["successful"].values()) and len(again["successful"]) == 10_000
    resolved = await ready.get_replicas([f["lfn"] for f in files[:100]])
    assert all(len(reps) == 2 for reps in resolved["successful"].values())
