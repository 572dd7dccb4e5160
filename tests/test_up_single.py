"""One `cairn up` per var/: a second one on the same directory refuses before touching anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests  # type: ignore[import-untyped]

from cairn.embedded_db import SOCKET_NAME, free_port
from tests.test_up import ROOT, Up


def test_a_second_up_on_the_same_var_refuses_and_leaves_the_first_running(tmp_path: Path) -> None:
    """The second used to remove the first's database socket, start a second FerretDB on the same
    files and, stopping, remove the socket again: the first's API lost its database for good."""
    first = Up(tmp_path, free_port())
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        env["PYTHONPATH"] = str(ROOT)
        second = subprocess.Popen([sys.executable, "-m", "cairn", "up", "--port", str(free_port())], cwd=tmp_path,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            second.send_signal(signal.SIGINT)
            out, _ = second.communicate(timeout=60)
            raise AssertionError("a second cairn up ran on the same var/:\n" + out) from None
        assert second.returncode != 0, out
        assert "another `cairn up`" in out, out
        assert (tmp_path / "var" / "db" / SOCKET_NAME).is_socket()
        health = requests.get(f"{first.url}/health", timeout=10).json()
        assert health["database"] == "ok", health
    finally:
        first.proc.send_signal(signal.SIGINT)
        first.proc.wait(timeout=60)
