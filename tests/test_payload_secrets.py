"""A payload runs as its user, not with the pilot's secrets: neither its environment nor the
pilot's process (`/proc/<pilot>/environ`, same Unix user) gives it the pilot's token or the
SEs' credentials (CAIRN_STORAGE_CREDENTIALS), which would reach every VO's data on the SEs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, PilotProcess, check_all, start_pilot, wait_for
from wms.config import WmsSettings

USER = ("jobs.read", "jobs.write")
SECRET = "s3cr3t-of-the-ses"
# A pilot and its payloads as one Unix user without privileges: root here, with every
# capability dropped (root's CAP_SYS_PTRACE reads any process).
UNPRIVILEGED = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")


async def _stdout_of(api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess],
                     tmp_path: Path, script: str, run_as: Sequence[str] = ()) -> str:
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id] = await alice.submit_jobs([{"executable": "/bin/sh", "arguments": ["-c", script]}])
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots, run_as=run_as)
    [job] = await wait_for(grid.db, [job_id], {"done", "failed"}, pilots=pilots)
    assert job["state"] == "done", job["reason"]
    return str(job["stdout"])


async def test_the_payloads_environment_holds_no_storage_credentials(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAIRN_STORAGE_CREDENTIALS", json.dumps({"OTHER-SE": {"secret_key": SECRET}}))
    stdout = await _stdout_of(api, grid, wms_config, pilots, tmp_path, "env; echo ran")
    assert stdout.endswith("ran\n") and "CAIRN_JOB_ID=" in stdout
    assert SECRET not in stdout and "CAIRN_STORAGE_CREDENTIALS" not in stdout


async def test_the_payload_cannot_read_the_pilots_environment(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAIRN_STORAGE_CREDENTIALS", json.dumps({"OTHER-SE": {"secret_key": SECRET}}))
    stdout = await _stdout_of(api, grid, wms_config, pilots, tmp_path,
                              "tr '\\0' '\\n' < /proc/$PPID/environ; echo ran", run_as=UNPRIVILEGED)
    assert stdout.endswith("ran\n")
    assert SECRET not in stdout and "CAIRN_TOKEN=" not in stdout
