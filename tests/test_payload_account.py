"""A pilot running as root runs each payload as an account of its own (`wms.payload_account`):
the payload cannot read what only the pilot's account may (on `cairn up`: the signing key, the
admin token, the database), still reads its inputs and leaves its outputs, which the pilot
registers; what it leaves running is stopped, and a link it leaves is not followed."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, PilotProcess, check_all, start_pilot, wait_for
from wms.config import WmsSettings

USER = ("jobs.read", "jobs.write")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a pilot switches accounts only as root")


async def test_a_root_pilots_payload_runs_as_its_account_and_cannot_read_the_pilots_files(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, pilots: list[PilotProcess], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = tmp_path / "signing-key.pem"  # what only the pilot's account may read
    secret.write_text("the installation's signing key\n")
    secret.chmod(0o600)
    monkeypatch.setenv("CAIRN_WMS_PAYLOAD_USER", "nobody")
    monkeypatch.setenv("CAIRN_WMS_PAYLOAD_DIR", str(tmp_path / "payloads"))
    # The pilot on uvloop (the other loop `kernel.event_loop` offers), whose subprocesses take no
    # user/group options: the switch to the account is the payload's own step before exec.
    monkeypatch.setenv("CAIRN_EVENT_LOOP", "uvloop")
    await grid.add_file("/cta/data/in.dat", b"input bytes\n", ["SITE-A-DISK"])
    script = (f"id -u; cat {secret} || echo refused; ln -s {secret} key.txt; "
              "cat in.dat > result.txt; (sleep 30 &) ; echo ran")
    async with api.client(api.token(sub="alice", scopes=USER)) as alice:
        [job_id, linked] = await alice.submit_jobs([
            {"executable": "/bin/sh", "arguments": ["-c", script], "input_data": ["/cta/data/in.dat"],
             "outputs": [{"path": "result.txt", "lfn": "/cta/out/result.txt", "se": "SITE-A-DISK"}]},
            {"executable": "/bin/sh", "arguments": ["-c", f"ln -s {secret} key.txt"],
             "outputs": [{"path": "key.txt", "lfn": "/cta/out/key.txt", "se": "SITE-A-DISK"}]}])
    await check_all(grid.db, wms_config)
    start_pilot(api, "SITE-A", tmp_path, wms_config, pilots)
    job, link_job = await wait_for(grid.db, [job_id, linked], {"done", "failed"}, pilots=pilots)
    assert job["state"] == "done", (job["reason"], job.get("stderr"))
    uid, *rest = str(job["stdout"]).splitlines()
    assert int(uid) == pwd.getpwnam("nobody").pw_uid and rest == ["refused", "ran"], job["stdout"]
    assert await grid.replica_bytes("/cta/out/result.txt", "SITE-A-DISK") == b"input bytes\n"
    assert link_job["state"] == "failed" and "leads out of the job's directory" in link_job["reason"]
    assert await grid.db["files"].find_one({"_id": "/cta/out/key.txt"}) is None
    assert not list((tmp_path / "payloads").iterdir())  # each job's directory went with its job


def _become_in_a_child(cwd: str) -> subprocess.CompletedProcess[str]:
    """`become` nobody in a child process (never in this one), which then says who it is."""
    nobody = pwd.getpwnam("nobody")
    code = ("import os; from wms.payload_account import become; "
            f"become({nobody.pw_uid}, {nobody.pw_gid}, {cwd!r}); "
            "print(os.getresuid(), os.getresgid(), os.getgroups(), os.getcwd())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)


def test_the_switch_drops_every_group_and_id_for_good_and_fails_closed(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    job = tmp_path / "job"
    job.mkdir()
    tmp_path.chmod(0o700)  # the account cannot pass it: the directory is entered before the switch
    done = _become_in_a_child(str(job))
    uid, gid = nobody.pw_uid, nobody.pw_gid
    assert done.stdout.strip() == f"{(uid, uid, uid)} {(gid, gid, gid)} [] {job}", done.stderr
    failed = _become_in_a_child(str(tmp_path / "gone"))
    assert failed.returncode != 0 and "FileNotFoundError" in failed.stderr and not failed.stdout
