"""A streamed answer the database leaves mid-way ends in a way a client can tell from a complete
one: NDJSON with an error line, Arrow and Parquet cut short (the error answer the middleware made
once the body had begun went nowhere, and the client waited for the rest until its own timeout);
one record the view cannot show ends an NDJSON stream with an error line too, not in a hang."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from kernel.db import Document
from kernel.settings import Settings, load_settings
from tests.fixtures.api import RunningApi
from tests.fixtures.tcp_gate import TcpGate

FILES = 20_000


@pytest.fixture
def settings(db_gate: TcpGate, tmp_path: Path) -> Settings:
    """This module's API (and database fixture) reach the database through the gate."""
    return load_settings(mongodb_uri=f"mongodb://127.0.0.1:{db_gate.port}/", database=f"t_{uuid.uuid4().hex[:12]}",
                         var_dir=tmp_path / "var", api_port=0, db_timeout_ms=1000)


@pytest.fixture
async def many(api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path) -> None:
    await put_storage_element(database, StorageElement(name="DISK", site="S", kind="disk",
                                                       protocols=[Protocol(scheme="file", prefix=str(tmp_path))]))
    async with api.client() as admin:
        for start in range(0, FILES, 5000):
            await admin.register_files([{"lfn": f"/vo/s/f{i:05d}", "size": 1, "adler32": "00000001",
                                         "replicas": [{"se": "DISK"}]} for i in range(start, start + 5000)])


@pytest.mark.parametrize("fmt", ["json", "arrow", "parquet"])
async def test_a_find_the_database_leaves_midway_does_not_look_complete(
    api: RunningApi, many: None, db_gate: TcpGate, fmt: str,
) -> None:
    headers = {"Authorization": f"Bearer {api.admin_token}"}
    body = b""
    complete = True
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, http.post(
            f"{api.url}/api/v1/find", json={"query": "size>=0", "path": "/vo", "format": fmt}, headers=headers) as resp:
        assert resp.status == 200
        body += await resp.content.readany()
        await db_gate.cut()
        try:
            async for chunk in resp.content.iter_any():
                body += chunk
        except aiohttp.ClientPayloadError:
            complete = False
    await db_gate.open()
    if fmt == "json":
        assert b'"error"' in body.splitlines()[-1], body[-300:]
    else:
        assert not complete


async def test_a_record_that_breaks_its_view_ends_the_stream_with_an_error_line(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    # a record stored before replicas always named their SE
    await database["files"].insert_one({"_id": "/vo/odd", "size": 1, "owner": "root", "group": "admin", "mode": 0o644,
                                        "replicas": [{"url": "file:///x"}]})
    headers = {"Authorization": f"Bearer {api.admin_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, http.post(
            f"{api.url}/api/v1/find", json={"query": "size>=0"}, headers=headers) as resp:
        body = await resp.read()
    assert b'"error"' in body.splitlines()[-1], body[-300:]
