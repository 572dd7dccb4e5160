"""`cairn up` runs the embedded default, keeps its data across restarts and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests  # type: ignore[import-untyped]

from cairn.embedded_db import free_port

ROOT = Path(__file__).resolve().parent.parent


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        direct = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return found
    for child in map(int, direct):
        found |= {child} | children_of(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout_s: float = 20) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = {p for p in pids if alive(p)}
        if not left:
            return set()
        time.sleep(0.2)
    return {p for p in pids if alive(p)}


class Up:
    def __init__(self, workdir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        env["PYTHONPATH"] = str(ROOT)
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cairn", "up", "--port", str(port)],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            if not line and self.proc.poll() is not None:
                raise AssertionError("cairn up exited early:\n" + "".join(self.output))
            self.output.append(line)
            if "press Ctrl-C" in line:
                return
        raise AssertionError("cairn up did not come up:\n" + "".join(self.output))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_up_answers_health_and_stops_cleanly_on_ctrl_c(workdir: Path) -> None:
    up = Up(workdir, free_port())
    try:
        health = requests.get(f"{up.url}/health", timeout=10).json()
        assert health == {"status": "ok", "database": "ok", "version": health["version"]}
        token = json.loads((workdir / "var" / "client.json").read_text())["token"]
        ses = requests.get(f"{up.url}/ses", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert {se["name"] for se in ses} == {"LOCAL-DISK1", "LOCAL-DISK2"}
        assert (workdir / "var" / "se" / "disk1").is_dir()
        portal = f"http://127.0.0.1:{up.port}/ui/"
        assert any(f"portal at {portal}" in line for line in up.output), "".join(up.output)
        assert "Log in" in requests.get(portal, timeout=10).text  # the portal sends a stranger to its login
        kids = children_of(up.proc.pid)
        assert len(kids) >= 2  # FerretDB and the API server at least
    finally:
        up.proc.send_signal(signal.SIGINT)
        up.proc.wait(timeout=60)
    assert not wait_gone(kids), "processes left behind after Ctrl-C"


def test_second_up_finds_the_data_of_the_first(workdir: Path) -> None:
    port = free_port()
    first = Up(workdir, port)
    token = json.loads((workdir / "var" / "client.json").read_text())["token"]
    se = {"name": "EXTRA", "site": "LOCAL", "kind": "disk",
          "protocols": [{"scheme": "file", "prefix": str(workdir / "extra")}]}
    resp = requests.put(f"{first.url}/ses/EXTRA", json=se, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    first.proc.send_signal(signal.SIGINT)
    first.proc.wait(timeout=60)

    second = Up(workdir, port)
    try:
        token = json.loads((workdir / "var" / "client.json").read_text())["token"]
        names = {s["name"] for s in requests.get(
            f"{second.url}/ses", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()}
        assert "EXTRA" in names
    finally:
        second.proc.send_signal(signal.SIGINT)
        second.proc.wait(timeout=60)


def test_killing_up_outright_leaves_no_process_behind(workdir: Path) -> None:
    up = Up(workdir, free_port())
    kids = children_of(up.proc.pid)
    assert kids
    up.proc.send_signal(signal.SIGKILL)
    up.proc.wait(timeout=10)
    assert not wait_gone(kids), "children survived SIGKILL of cairn up"


def ferretdb_children(pid: int) -> set[int]:
    """The live FerretDB processes below `pid`."""
    found = set()
    for child in children_of(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"ferretdb" in command and alive(child):
            found.add(child)
    return found


def test_up_restarts_its_database_when_it_dies_and_the_data_is_still_there(workdir: Path) -> None:
    up = Up(workdir, free_port())
    try:
        token = json.loads((workdir / "var" / "client.json").read_text())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        se = {"name": "BEFORE", "site": "LOCAL", "kind": "disk",
              "protocols": [{"scheme": "file", "prefix": str(workdir / "before")}]}
        assert requests.put(f"{up.url}/ses/BEFORE", json=se, headers=auth, timeout=10).status_code == 200
        (first,) = ferretdb_children(up.proc.pid)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                health = requests.get(f"{up.url}/health", timeout=5).json()
            except requests.RequestException:
                health = {}
            if health.get("database") == "ok" and ferretdb_children(up.proc.pid) - {first}:
                break
            time.sleep(0.5)
        assert health.get("status") == "ok" and health.get("database") == "ok", health
        names = {s["name"] for s in requests.get(f"{up.url}/ses", headers=auth, timeout=10).json()}
        assert "BEFORE" in names
    finally:
        up.proc.send_signal(signal.SIGINT)
        rest, _ = up.proc.communicate(timeout=60)
    log = "".join(up.output) + rest
    assert "ferretdb exited with -9" in log and "restarted ferretdb (restart 1" in log, log



# A SIGINT handled while CPython runs its own at-fork hooks (forking a child with a preexec_fn, as
# `cairn up` does for each of its children): the handler's KeyboardInterrupt is printed and lost
# there, and the supervisor must stop all the same.
SWALLOWED_CTRL_C = """
import os, signal, subprocess, sys, threading
from cairn.up import StopSignals, Supervisor
from kernel.process import child_preexec
from kernel.settings import load_settings

stop = StopSignals()
signal.signal(signal.SIGINT, stop)

def ctrl_c_inside_the_hook() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(10_000))  # the handler runs here, inside the hook: its raise goes nowhere

os.register_at_fork(after_in_parent=ctrl_c_inside_the_hook)
subprocess.run(["true"], preexec_fn=child_preexec, check=True)
print("still running after the Ctrl-C", flush=True)
watching = threading.Thread(target=Supervisor(load_settings(), {}).watch, args=(stop.asked,))
watching.start()
watching.join(timeout=10)
print("supervisor stopped" if not watching.is_alive() else "supervisor still watching", flush=True)
os._exit(0)
"""


def test_a_ctrl_c_whose_interrupt_python_dropped_still_stops_the_supervisor(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    done = subprocess.run([sys.executable, "-c", SWALLOWED_CTRL_C], cwd=workdir, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert "Exception ignored" in done.stderr and "KeyboardInterrupt" in done.stderr, done.stderr
    said = done.stdout.splitlines()
    assert said == ["still running after the Ctrl-C", "supervisor stopped"], done.stdout + done.stderr
