"""`cairn up` keeps its state to its own account: another local account can neither connect to
the embedded database (FerretDB has no accounts: whoever connects reads and writes everything)
nor read its files, the signing key or the admin token, even when `var` sits in a directory
every account may enter."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote

import pytest

from cairn.embedded_db import free_port
from tests.test_up import Up

# The probe's interpreter: one every account may run (this one may live in root's home).
SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None
                                or not os.access(SYSTEM_PYTHON, os.X_OK),
                                reason="acting as another account needs root, runuser and a system python3")

# Run as `nobody`: what it gets opening each file, and connecting to the database's socket.
PROBE = """
import json, socket, sys
out = {}
for name in sys.argv[2:]:
    try:
        open(name, "rb").read(1)
        out[name] = "read"
    except OSError as exc:
        out[name] = type(exc).__name__
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
    out["socket"] = "connected"
except OSError as exc:
    out["socket"] = type(exc).__name__
print(json.dumps(out))
"""


def as_nobody(socket_path: str, *files: Path) -> dict[str, str]:
    done = subprocess.run(["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-I", "-c", PROBE, socket_path,
                           *map(str, files)], capture_output=True, text=True, timeout=60, check=True)
    answer: dict[str, str] = json.loads(done.stdout)
    return answer


def tcp_listeners(pid: int) -> list[str]:
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in lines if f"pid={pid}," in line]



def _cmdline(process: Path) -> bytes:
    """A process's command line, or nothing once it has ended (the other test worker's processes
    come and go while /proc is read)."""
    try:
        return (process / "cmdline").read_bytes()
    except OSError:
        return b""

def test_another_account_reaches_neither_the_database_nor_the_token() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cairn-up-private-"))
    try:
        workdir.chmod(0o755)  # as a home directory often is: every account may enter it
        var = workdir / "var"
        var.mkdir(mode=0o755)
        (var / "client.json").write_text("{}")  # left by an older `cairn up`, mode 0644
        (var / "client.json").chmod(0o644)
        up = Up(workdir, free_port())
        try:
            uri = re.search(r"FerretDB on (mongodb://\S+)", "".join(up.output))
            assert uri, "".join(up.output)
            socket_path = unquote(uri.group(1).removeprefix("mongodb://").rstrip("/"))
            assert socket_path == str(var.resolve() / "db" / "ferretdb.sock")
            ferretdb = [p for p in Path("/proc").glob("[0-9]*")
                        if b"--listen-unix" in (line := _cmdline(p)) and socket_path.encode() in line]
            assert len(ferretdb) == 1
            assert tcp_listeners(int(ferretdb[0].name)) == []  # no port any account could reach
            modes = {name: stat.S_IMODE((var / name).stat().st_mode) for name in ("", "db", "client.json")}
            assert modes == {"": 0o700, "db": 0o700, "client.json": 0o600}, modes
            files = [var / "client.json", var / "db" / "cairn.sqlite", *sorted((var / "keys").iterdir())]
            answers = as_nobody(socket_path, *files)
            assert answers == {**{str(f): "PermissionError" for f in files}, "socket": "PermissionError"}, answers
            assert json.loads((var / "client.json").read_text())["token"]
        finally:
            up.proc.send_signal(signal.SIGINT)
            up.proc.wait(timeout=60)
        assert not Path(socket_path).exists()  # removed at the stop
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
