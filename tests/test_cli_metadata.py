"""The metadata, find, dataset, container, ancestry, usage and se dump commands, run as
`python -m cairn` against the in-process API."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli


@pytest.fixture
async def loaded(admin: Client, catalogue_db: AsyncDatabase[Document]) -> Client:
    await admin.declare_field("run", "int")
    files = [{"lfn": f"/cta/mc/f{i}", "size": 10 + i, "adler32": "0000abcd", "replicas": [{"se": "CERN-DISK"}],
              "meta": {"run": i}} for i in range(5)]
    assert not (await admin.register_files(files))["failed"]
    return admin


async def test_meta_and_find(api: RunningApi, loaded: Client, tmp_path: Path) -> None:
    token = api.admin_token
    done = await run_cli(api.url, token, "meta", "set", "/cta/mc", "particle=proton", "energy=1.5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["own"] == {"particle": "proton", "energy": 1.5}
    got = await run_cli(api.url, token, "meta", "get", "/cta/mc/f1", "--json")
    assert json.loads(got.stdout)["effective"] == {"particle": "proton", "energy": 1.5, "run": 1}
    shown = await run_cli(api.url, token, "meta", "get", "/cta/mc/f1")
    assert "particle" in shown.stdout and "/cta/mc" in shown.stdout
    bad = await run_cli(api.url, token, "meta", "set", "/cta/mc/f1", "run=one")
    assert bad.returncode == 2 and "run" in bad.stderr
    removed = await run_cli(api.url, token, "meta", "rm", "/cta/mc", "energy", "--json")
    assert "energy" not in json.loads(removed.stdout)["effective"]
    fields = await run_cli(api.url, token, "meta", "fields", "--json")
    assert json.loads(fields.stdout)[0]["key"] == "run"

    found = await run_cli(api.url, token, "find", "particle=proton run>=3", "--json")
    assert [json.loads(line)["lfn"] for line in found.stdout.splitlines()] == ["/cta/mc/f3", "/cta/mc/f4"]
    as_table = await run_cli(api.url, token, "find", "run<2")
    assert "/cta/mc/f1" in as_table.stdout and "2 file(s)" in as_table.stderr
    out = tmp_path / "out.parquet"
    written = await run_cli(api.url, token, "find", "run=Any", "--format", "parquet", "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert pq.read_table(out).column("meta_run").to_pylist() == [0, 1, 2, 3, 4]
    broken = await run_cli(api.url, token, "find", "run>=1 or (run=2")
    assert broken.returncode == 2 and "^" in broken.stderr and "position 10" in broken.stderr


async def test_datasets_containers_ancestry_usage_and_dump(api: RunningApi, loaded: Client, tmp_path: Path) -> None:
    token = api.admin_token

    async def cairn(*args: str) -> str:
        done = await run_cli(api.url, token, *args)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    assert json.loads(await cairn("dataset", "create", "cta:ds", "--json"))["state"] == "open"
    await cairn("dataset", "attach", "cta:ds", "/cta/mc/f0", "/cta/mc/f1")
    assert json.loads(await cairn("dataset", "show", "cta:ds", "--json"))["files"] == 2
    await cairn("dataset", "detach", "cta:ds", "/cta/mc/f1")
    await cairn("dataset", "close", "cta:ds")
    refused = await run_cli(api.url, token, "dataset", "attach", "cta:ds", "/cta/mc/f2")
    assert refused.returncode == 2 and "closed" in refused.stderr
    dyn = json.loads(await cairn("dataset", "create", "cta:dyn", "--query", "run>=3", "--json"))
    assert dyn["files"] == 2
    await cairn("dataset", "refresh", "cta:dyn")
    await cairn("dataset", "freeze", "cta:dyn")
    contents = await cairn("dataset", "contents", "cta:dyn", "--json")
    assert [json.loads(line)["lfn"] for line in contents.splitlines()] == ["/cta/mc/f3", "/cta/mc/f4"]
    out = tmp_path / "dyn.parquet"
    await cairn("dataset", "contents", "cta:dyn", "--format", "parquet", "-o", str(out))
    assert pq.read_table(out).num_rows == 2
    assert "cta:dyn" in await cairn("dataset", "list", "cta")

    await cairn("container", "create", "cta:c1")
    await cairn("container", "create", "cta:c2")
    await cairn("container", "attach", "cta:c1", "cta:c2", "cta:ds")
    cycle = await run_cli(api.url, token, "container", "attach", "cta:c2", "cta:c1")
    assert cycle.returncode == 2 and "cycle" in cycle.stderr
    assert "cta:c2" in await cairn("container", "contents", "cta:c1")

    await cairn("ancestry", "link", "/cta/mc/f4", "/cta/mc/f3")
    up = json.loads(await cairn("ancestry", "show", "/cta/mc/f4", "--json"))
    assert [f["lfn"] for f in up["files"]] == ["/cta/mc/f3"]
    assert "/cta/mc/f4" in await cairn("ancestry", "show", "/cta/mc/f3", "--descendants", "--depth", "2")

    assert json.loads(await cairn("usage", "dir", "/cta/mc", "--json")) == {"path": "/cta/mc", "files": 5,
                                                                           "bytes": 60}
    assert json.loads(await cairn("usage", "ses", "--json")) == [{"se": "CERN-DISK", "replicas": 5, "bytes": 60}]
    assert json.loads(await cairn("usage", "rebuild", "--dry-run", "--json"))["drifted"] == 0
    dump = tmp_path / "dump.parquet"
    await cairn("se", "dump", "CERN-DISK", "-o", str(dump))
    assert pq.read_table(dump).column("lfn").to_pylist() == [f"/cta/mc/f{i}" for i in range(5)]
