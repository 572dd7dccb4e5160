"""The `cairn` command ends without the interpreter's teardown (`cairn.cli.main.leave`): what the
ordinary exit would have done that matters must still happen. Each case runs in a process of
its own, as the command does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bench.harness import ROOT


def _run(code: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    script = "from cairn.cli.main import leave\n" + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # output buffered, as a user's is
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=60, check=False)


def test_buffered_output_and_exit_handlers_survive() -> None:
    """200 KB still in stdout's buffer reach the reader; exit handlers run, after the command."""
    done = _run("""
        import atexit, sys
        atexit.register(lambda: sys.stderr.write("handler ran\\n"))
        sys.stdout.write("x" * 200_000)
        sys.stdout.write("\\nend\\n")
        leave(None)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x" * 200_000 + "\nend\n"
    assert done.stderr == "handler ran\n"


@pytest.mark.parametrize(("code", "status", "stderr"), [("3", 3, ""), ("'no such thing'", 1, "no such thing\n"),
                                                        ("False", 0, "")])
def test_status_as_sys_exit_gives_it(code: str, status: int, stderr: str) -> None:
    done = _run(f"print('out'); leave({code})")
    assert (done.returncode, done.stdout, done.stderr) == (status, "out\n", stderr)


def test_failed_flush_is_an_error() -> None:
    """Output that cannot be written at the end (a full disk) fails the command, as Python's exit does."""
    with open("/dev/full", "w") as full:
        done = _run("print('lost'); leave(0)", stdout=full)
    assert done.returncode == 120


def test_running_thread_is_waited_for() -> None:
    """A thread still writing when the command ends: the ordinary exit, which waits for it."""
    done = _run("""
        import threading, time
        def late():
            time.sleep(0.3)
            print("from the thread", flush=True)
        threading.Thread(target=late).start()
        leave(0)
    """)
    assert (done.returncode, done.stdout) == (0, "from the thread\n")


def test_a_profiled_command_writes_its_profile(tmp_path: Path) -> None:
    """Under `python -m cProfile -o FILE`, which writes FILE after the program returns: the ordinary exit."""
    script = tmp_path / "command.py"
    script.write_text("from cairn.cli.main import leave\nprint('out')\nleave(4)\n")
    profile = tmp_path / "command.prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), str(script)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout == "out\n", done.stderr  # (cProfile swallows the status: its own behaviour)
    assert profile.exists() and profile.stat().st_size > 0
