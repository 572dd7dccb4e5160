"""The embedded default database: a FerretDB (SQLite backend) child process.

Used by `cairn up` (data under ./var/db) and by the test bed (data in a temp dir). FerretDB
speaks the MongoDB wire protocol, so everything else talks to it as to MongoDB.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kernel.errors import ConfigurationError
from kernel.process import child_preexec, stop_processes

FERRETDB_HINT = (
    "FerretDB 1.24 is needed for the embedded default: run `bash .ci/install-ferretdb` "
    "(builds github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2 with Go), or set CAIRN_MONGODB_URI"
)


def find_ferretdb() -> str:
    """The ferretdb binary: $CAIRN_FERRETDB, PATH, or Go's bin directory."""
    candidates = [os.environ.get("CAIRN_FERRETDB"), shutil.which("ferretdb")]
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    candidates.append(str(Path(gopath) / "bin" / "ferretdb"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigurationError(f"ferretdb not found. {FERRETDB_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, *, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigurationError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ConfigurationError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s")


@dataclass
class EmbeddedDatabase:
    """A running FerretDB; `uri` is what CAIRN_MONGODB_URI should be set to, and `argv` starts
    it again on the same port and data (how `cairn up` restarts it)."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_file: Path
    argv: list[str]

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def stop(self, timeout_s: float = 10) -> None:
        stop_processes([self.process], timeout_s=timeout_s)


def ferretdb_command(data_dir: Path, port: int) -> list[str]:
    """The command line of a FerretDB with its SQLite files in data_dir, on loopback:port."""
    state_dir = data_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    return [
        find_ferretdb(),
        "--handler=sqlite",
        f"--sqlite-url=file:{data_dir.resolve()}/",
        f"--listen-addr=127.0.0.1:{port}",
        "--debug-addr=-",
        "--telemetry=disable",
        f"--state-dir={state_dir.resolve()}",
        "--log-level=warn",
    ]


def start_ferretdb(data_dir: Path, *, port: int | None = None, timeout_s: float = 30) -> EmbeddedDatabase:
    """Start FerretDB with its SQLite files in data_dir, on loopback, and wait until it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_file = data_dir / "ferretdb.log"
    args = ferretdb_command(data_dir, port)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec)
    try:
        wait_for_port("127.0.0.1", port, timeout_s=timeout_s, proc=proc)
    except ConfigurationError as exc:
        proc.kill()
        tail = log_file.read_text(errors="replace")[-2000:]
        raise ConfigurationError(f"FerretDB did not start: {exc}\n{tail}") from exc
    return EmbeddedDatabase(proc, port, data_dir, log_file, args)
