"""Pilots reach storage as transfer workers do: the SE's protocol options (S3 endpoint and
region, the davs CA) come with each replica and output slot, secrets from the pilot's own
CAIRN_STORAGE_CREDENTIALS; a URL outside its SE is refused before any plugin is made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from storage_plugins.registry import plugin_for
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import PilotProcess, check_all, start_pilot, wait_for
from tests.fixtures.live_ses import LiveSEs
from transfers.endpoints import plugin_options as endpoint_options
from wms.config import WmsSettings
from wms.pilot_data import DataAccessError, plugin_options

USER = ("jobs.read", "jobs.write")
# (input SE, output SE): every kind is read from and written to once.
ROUTES = [("S3-SE", "DAVS-SE"), ("ROOT-SE", "S3-SE"), ("DAVS-SE", "ROOT-SE")]


async def test_jobs_read_and_write_s3_xrootd_and_webdav_ses_with_their_options(
    api: RunningApi, admin: Client, live_ses: LiveSEs, database: AsyncDatabase[Document], wms_config: WmsSettings,
    pilots: list[PilotProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await live_ses.add("s3", "S3-SE")
    await live_ses.add("root", "ROOT-SE")
    await live_ses.add("davs", "DAVS-SE")
    await admin.mkdir("/cta/in")
    await admin.mkdir("/cta/out")
    await admin.chmod("/cta/out", 0o777)
    for source, _ in ROUTES:
        local = tmp_path / f"{source}.dat"
        local.write_bytes(f"input on {source}\n".encode())
        [up] = await admin.upload([local], f"/cta/in/{source}.dat", source, credentials=live_ses.credentials)
        assert up.status == "uploaded", up
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        ids = await alice.submit_jobs([{
            "executable": "/bin/sh", "arguments": ["-c", f"cat {source}.dat > out.txt; echo to {dest} >> out.txt"],
            "input_data": [f"/cta/in/{source}.dat"],
            "outputs": [{"path": "out.txt", "lfn": f"/cta/out/{source}-to-{dest}.txt", "se": dest}],
        } for source, dest in ROUTES])
    await check_all(database, wms_config)
    monkeypatch.setenv("CAIRN_STORAGE_CREDENTIALS", json.dumps(live_ses.credentials))
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    done = await wait_for(database, ids, {"done", "failed"}, pilots=pilots)
    assert [(j["state"], j["reason"]) for j in done] == [
        ("done", "payload succeeded and outputs are registered")] * len(ROUTES)
    for source, dest in ROUTES:
        # Read back through the registered URL (it names the job's attempt) with the SE's own options.
        lfn = f"/cta/out/{source}-to-{dest}.txt"
        [replica] = (await admin.stat(lfn))["replicas"]
        se = live_ses.made[dest]
        options = endpoint_options(se, se.protocols[0], live_ses.credentials)
        local = tmp_path / "down" / f"{source}.txt"
        local.parent.mkdir(exist_ok=True)
        await plugin_for(replica["url"], options).get(replica["url"], local)
        assert (replica["se"], local.read_bytes()) == (dest, f"input on {source}\nto {dest}\n".encode())

async def test_a_url_outside_its_se_is_refused_before_any_plugin(live_ses: LiveSEs) -> None:
    se = await live_ses.add("file", "FILE-SE")
    config = se.model_dump(mode="json")
    root = se.protocols[0].prefix
    assert plugin_options(f"file://{root}/cta/a.dat", "/cta/a.dat", config, "read", {})["root"] == root
    for url in (f"file://{root}/../escape/cta/a.dat", f"file://{root}/cta/other.dat", "file:///etc/passwd"):
        with pytest.raises(DataAccessError):
            plugin_options(url, "/cta/a.dat", config, "read", {})


async def test_a_pilot_stops_reading_an_input_that_storage_holds_bigger_than_registered(
    api: RunningApi, admin: Client, live_ses: LiveSEs, database: AsyncDatabase[Document], wms_config: WmsSettings,
    pilots: list[PilotProcess], tmp_path: Path,
) -> None:
    """The object behind an input replaced on storage by a far bigger one: the pilot's copy stops
    at the registered size (else it filled the worker node's disk before the checksum said no)."""
    await live_ses.add("file", "DISK-SE")
    await admin.mkdir("/cta/in")
    local = tmp_path / "small.dat"
    local.write_bytes(b"small input\n")
    [up] = await admin.upload([local], "/cta/in/small.dat", "DISK-SE")
    assert up.status == "uploaded", up
    with live_ses.stored_file("DISK-SE", "/cta/in/small.dat").open("r+b") as stored:
        stored.truncate(64 << 20)  # sparse: 64 MiB where 12 bytes were registered
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/true", "input_data": ["/cta/in/small.dat"]}])
    await check_all(database, wms_config)
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    [done] = await wait_for(database, [job_id], {"done", "failed"}, pilots=pilots)
    assert done["state"] == "failed"
    assert "more than 12 bytes" in done["reason"], done["reason"]
