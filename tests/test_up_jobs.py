"""`cairn up` runs the job daemons and a pilot for its local site: jobs submitted with the CLI run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cairn.embedded_db import free_port
from tests.test_up import ROOT, Up


def cairn(workdir: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({"PYTHONPATH": str(ROOT), "CAIRN_VAR_DIR": str(workdir / "var")})
    done = subprocess.run([sys.executable, "-m", "cairn", *args, "--json"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_final(workdir: Path, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = cairn(workdir, "job", "status", job_id)
        if job["state"] in ("done", "failed", "killed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_jobs_submitted_with_the_cli_run_at_the_local_site(tmp_path: Path) -> None:
    up = Up(tmp_path, free_port())
    try:
        (tmp_path / "make.yaml").write_text(
            "name: make-%(param)s\n"
            "executable: /bin/sh\n"
            "arguments: ['-c', 'echo number %(param)s > n.txt']\n"
            "outputs: [{path: n.txt, lfn: '/local/n/%(param)s.txt', se: LOCAL-DISK1}]\n"
            "parameters: [7, 8]\n"
        )
        made = cairn(tmp_path, "job", "submit", str(tmp_path / "make.yaml"))["ids"]
        assert [(wait_final(tmp_path, i)["state"], wait_final(tmp_path, i)["reason"]) for i in made] == [
            ("done", "payload succeeded and outputs are registered")] * 2

        (tmp_path / "sum.json").write_text(json.dumps({
            "executable": "/bin/sh", "arguments": ["-c", "cat 7.txt 8.txt > sum.txt; cat sum.txt"],
            "input_data": ["/local/n/7.txt", "/local/n/8.txt"],
            "outputs": [{"path": "sum.txt", "lfn": "/local/sum.txt", "se": "LOCAL-DISK2"}],
        }))
        [summed] = cairn(tmp_path, "job", "submit", str(tmp_path / "sum.json"))["ids"]
        job = wait_final(tmp_path, summed)
        assert (job["state"], job["site"], job["sites"]) == ("done", "LOCAL", ["LOCAL"])
        logs = cairn(tmp_path, "job", "logs", summed)
        assert logs["stdout"] == "number 7\nnumber 8\n"
        [replica] = cairn(tmp_path, "stat", "/local/sum.txt")["replicas"]
        assert Path(replica["url"].removeprefix("file://")).read_text() == "number 7\nnumber 8\n"
        if os.geteuid() == 0:  # `cairn up` as root runs payloads as `nobody`: var is not theirs to read
            peek_script = f"id -u; cat {tmp_path}/var/client.json || echo refused"
            (tmp_path / "peek.json").write_text(json.dumps({"executable": "/bin/sh", "arguments": ["-c", peek_script]}))
            [peek] = cairn(tmp_path, "job", "submit", str(tmp_path / "peek.json"))["ids"]
            assert wait_final(tmp_path, peek)["state"] == "done"
            assert cairn(tmp_path, "job", "logs", peek)["stdout"] == "65534\nrefused\n"
            made.append(peek)
        listed = cairn(tmp_path, "job", "list")
        assert sorted(j["id"] for j in listed) == sorted([*made, summed])
    finally:
        up.proc.send_signal(signal.SIGINT)
        up.proc.wait(timeout=60)
