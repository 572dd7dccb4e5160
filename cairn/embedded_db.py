"""The embedded default database: a FerretDB (SQLite backend) child process.

Used by `cairn up` (data under ./var/db) and by the test bed (data in a temp dir). FerretDB
speaks the MongoDB wire protocol, so everything else talks to it as to MongoDB. It has no
accounts: whoever can connect reads and writes everything. `cairn up`'s therefore listens on a
Unix socket in its private data directory (no other local account can connect, or read its
files), not on a loopback port that every account of the machine reaches; the test bed's listens
on a loopback port (its fault tests put a gate in front of it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from kernel.errors import ConfigurationError
from kernel.private_files import private_dir
from kernel.process import child_preexec, stop_processes

SOCKET_NAME = "ferretdb.sock"
UNIX_PATH_MAX = 107  # bytes of a Unix socket's path on Linux, without the final NUL
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
    _wait_listening(lambda: socket.create_connection((host, port), timeout=0.5), f"{host}:{port}",
                    timeout_s=timeout_s, proc=proc)


def wait_for_socket(path: Path, *, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(0.5)
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return sock

    _wait_listening(connect, str(path), timeout_s=timeout_s, proc=proc)


def _wait_listening(connect: Callable[[], socket.socket], where: str, *, timeout_s: float,
                    proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigurationError(f"process exited with code {proc.returncode} before listening on {where}")
        try:
            connect().close()
            return
        except OSError:
            time.sleep(0.1)
    raise ConfigurationError(f"nothing listens on {where} after {timeout_s:.0f}s")


def socket_path(data_dir: Path) -> Path:
    """Where a private FerretDB listens: data_dir/ferretdb.sock, or, when that path is too long
    for a Unix socket (107 bytes), the same name in a new private directory under the system's
    temporary directory."""
    path = data_dir.resolve() / SOCKET_NAME
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="cairn-db-")) / SOCKET_NAME


@dataclass
class EmbeddedDatabase:
    """A running FerretDB; `uri` is what CAIRN_MONGODB_URI should be set to, and `argv` starts
    it again on the same socket or port and data (how `cairn up` restarts it, after `prepare`)."""

    process: subprocess.Popen[bytes]
    port: int | None
    data_dir: Path
    log_file: Path
    argv: list[str]
    unix_socket: Path | None = None

    @property
    def uri(self) -> str:
        if self.unix_socket is not None:
            return f"mongodb://{quote(str(self.unix_socket), safe='')}/"
        return f"mongodb://127.0.0.1:{self.port}/"

    def prepare(self) -> None:
        """What a restart of `argv` needs first."""
        _remove_stale_socket(self.unix_socket)

    def stop(self, timeout_s: float = 10) -> None:
        stop_processes([self.process], timeout_s=timeout_s)
        self.clean_up()

    def clean_up(self) -> None:
        """After the last stop: the socket file, and the directory `socket_path` made for it."""
        _remove_stale_socket(self.unix_socket)
        if self.unix_socket is not None and self.unix_socket.parent != self.data_dir.resolve():
            with contextlib.suppress(OSError):
                self.unix_socket.parent.rmdir()


def ferretdb_command(data_dir: Path, port: int | None = None, unix_socket: Path | None = None) -> list[str]:
    """The command line of a FerretDB with its SQLite files in data_dir, on loopback:port or
    (with no TCP listener at all) on unix_socket."""
    state_dir = data_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    listen = (["--listen-addr=", f"--listen-unix={unix_socket}"] if unix_socket is not None
              else [f"--listen-addr=127.0.0.1:{port}"])
    return [
        find_ferretdb(),
        "--handler=sqlite",
        f"--sqlite-url=file:{data_dir.resolve()}/",
        *listen,
        "--debug-addr=-",
        "--telemetry=disable",
        f"--state-dir={state_dir.resolve()}",
        "--log-level=warn",
    ]


def start_ferretdb(data_dir: Path, *, port: int | None = None, private: bool = False,
                   timeout_s: float = 30) -> EmbeddedDatabase:
    """Start FerretDB with its SQLite files in data_dir and wait until it listens: on a loopback
    port, or, `private`, on a Unix socket in data_dir made a directory only this account may
    enter (then no other local account can connect to it or read its files)."""
    if private:
        private_dir(data_dir)
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
    unix_socket = socket_path(data_dir) if private else None
    port = None if private else port or free_port()
    log_file = data_dir / "ferretdb.log"
    args = ferretdb_command(data_dir, port, unix_socket)
    _remove_stale_socket(unix_socket)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec)
    try:
        if unix_socket is not None:
            wait_for_socket(unix_socket, timeout_s=timeout_s, proc=proc)
        else:
            assert port is not None
            wait_for_port("127.0.0.1", port, timeout_s=timeout_s, proc=proc)
    except ConfigurationError as exc:
        proc.kill()
        tail = log_file.read_text(errors="replace")[-2000:]
        raise ConfigurationError(f"FerretDB did not start: {exc}\n{tail}") from exc
    return EmbeddedDatabase(proc, port, data_dir, log_file, args, unix_socket)


def _remove_stale_socket(unix_socket: Path | None) -> None:
    """Before a (re)start: a socket file left by a FerretDB that was killed would make the next
    one fail to listen ("address already in use")."""
    if unix_socket is not None:
        unix_socket.unlink(missing_ok=True)
