"""The catalogue CLI through `python -m cairn` subprocesses against the in-process API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from tests.fixtures.api import RunningApi

ROOT = Path(__file__).resolve().parent.parent


async def cairn(api: RunningApi, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_API_URL": api.url,
           "CAIRN_TOKEN": token if token is not None else api.admin_token, "COLUMNS": "200"}
    # The API runs on this test's event loop: wait for the child without blocking it.
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cairn", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_register_ls_stat_replicas_mv_rm(
    api: RunningApi, catalogue_db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    assert (await cairn(api, "mkdir", "-p", "/cta/run1")).returncode == 0
    done = await cairn(api, "register", "/cta/run1/a.root", "--size", "42", "--adler32", "01020304",
                       "--se", "CERN-DISK")
    assert done.returncode == 0, done.stderr
    batch = tmp_path / "files.json"
    batch.write_text(json.dumps([{"lfn": "/cta/run1/b.root", "size": 1, "adler32": "00000001"},
                                 {"lfn": "/cta/run1/a.root", "size": 7, "adler32": "01020304"}]))
    mixed = await cairn(api, "register", "--from-file", str(batch), "--json")
    assert mixed.returncode == 1
    assert "size" in json.loads(mixed.stdout)["failed"]["/cta/run1/a.root"]

    listing = await cairn(api, "ls", "/cta/run1")
    assert "a.root" in listing.stdout and "-rw-rw-r--" in listing.stdout
    names = [e["name"] for e in json.loads((await cairn(api, "ls", "/cta/run1", "--json")).stdout)]
    assert names == ["a.root", "b.root"]
    shown = json.loads((await cairn(api, "stat", "/cta/run1/a.root", "--json")).stdout)
    assert shown["size"] == 42 and shown["replicas"][0]["se"] == "CERN-DISK"
    reps = await cairn(api, "replicas", "/cta/run1/a.root", "/cta/run1/none")
    assert "davs://eos.cern.ch:443/eos/cta/cta/run1/a.root" in reps.stdout and "no such file" in reps.stderr

    assert (await cairn(api, "mv", "/cta/run1/b.root", "/cta/run1/c.root")).returncode == 0
    assert (await cairn(api, "chmod", "640", "/cta/run1/c.root")).returncode == 0
    assert json.loads((await cairn(api, "stat", "/cta/run1/c.root", "--json")).stdout)["mode"] == 0o640
    assert (await cairn(api, "rm", "/cta/run1/c.root")).returncode == 0
    gone = await cairn(api, "stat", "/cta/run1/c.root")
    assert gone.returncode == 2 and "not_found" in gone.stderr


async def test_errors_are_messages_with_codes(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    bad = await cairn(api, "mkdir", "/cta/../etc")
    assert bad.returncode == 2 and "invalid_input" in bad.stderr and "Traceback" not in bad.stderr
    denied = await cairn(api, "mkdir", "/cta", token=api.token("eve", groups=("eve",)))
    assert denied.returncode == 2 and "forbidden" in denied.stderr


async def test_se_and_site_commands(api: RunningApi, catalogue_db: AsyncDatabase[Document], tmp_path: Path) -> None:
    listed = json.loads((await cairn(api, "se", "list", "--json")).stdout)
    assert {s["name"] for s in listed} == {"CERN-DISK", "CERN-TAPE", "DESY-DISK"}
    assert (await cairn(api, "se", "set", "DESY-DISK", "--no-read", "--used-bytes", "5")).returncode == 0
    shown = json.loads((await cairn(api, "se", "show", "DESY-DISK", "--json")).stdout)
    assert shown["read_enabled"] is False and shown["space"]["used_bytes"] == 5
    definition = tmp_path / "se.json"
    definition.write_text(json.dumps({**shown, "name": "RAL-DISK", "site": "RAL"}))
    assert (await cairn(api, "se", "put", str(definition))).returncode == 0
    saved = await cairn(api, "site", "put", "RAL", "--description", "Rutherford", "--attribute", "tier=1")
    assert saved.returncode == 0
    site = json.loads((await cairn(api, "site", "show", "RAL", "--json")).stdout)
    assert site["description"] == "Rutherford" and [s["name"] for s in site["ses"]] == ["RAL-DISK"]
    assert "RAL-DISK" in (await cairn(api, "site", "show", "RAL")).stdout
    assert (await cairn(api, "se", "delete", "RAL-DISK")).returncode == 0
    assert (await cairn(api, "site", "delete", "RAL")).returncode == 0
    assert "RAL" not in (await cairn(api, "site", "list")).stdout
    me = json.loads((await cairn(api, "whoami", "--json")).stdout)
    assert me["admin"] is True
