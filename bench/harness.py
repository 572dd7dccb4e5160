"""What the benchmarks that start servers share: a scratch directory, moto in its own process,
the database ($CAIRN_MONGODB_URI, else FerretDB in the scratch directory), the API server with an
admin token, whatever else they start stopped in reverse order, the clock, rates, and the JSON
they print."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.embedded_db import find_ferretdb, free_port, start_ferretdb, wait_for_port
from cairn.embedded_xrootd import make_base_dir
from kernel import event_loop
from kernel.process import child_preexec
from kernel.settings import load_settings
from kernel.tokens import BuiltinIssuer

ROOT = Path(__file__).resolve().parent.parent

MB = 1_000_000
# moto runs in its own process so that its work does not share the interpreter with the client.
MOTO = (
    "from moto.server import ThreadedMotoServer as S; import time; "
    "S(ip_address='127.0.0.1', port={port}).start(); time.sleep(1e9)"
)


@dataclass
class Testbed:
    """The servers of one benchmark run and where it may write."""

    scratch: Path
    xrootd_base: Path
    moto_port: int
    database_uri: str
    database_kind: str
    database_pid: int | None = None  # the embedded FerretDB's (None for a database given by URI)
    stops: list[Callable[[], object]] = field(default_factory=list)

    def on_exit(self, stop: Callable[[], object]) -> None:
        """Stop something this run started (before the database and moto go)."""
        self.stops.append(stop)


@contextlib.contextmanager
def testbed(prefix: str) -> Iterator[Testbed]:
    """Scratch and XRootD base directories, moto and the database; all removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    xrootd_base = make_base_dir(f"{prefix}xrootd-")
    moto_port = free_port()
    moto = subprocess.Popen([sys.executable, "-c", MOTO.format(port=moto_port)], preexec_fn=child_preexec,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    given_uri = os.environ.get("CAIRN_MONGODB_URI")
    ferret = None if given_uri else start_ferretdb(scratch / "db")
    bed = Testbed(scratch, xrootd_base, moto_port, given_uri or (ferret.uri if ferret else ""),
                  "CAIRN_MONGODB_URI" if given_uri else "FerretDB 1.24 (SQLite)",
                  ferret.process.pid if ferret else None)
    try:
        wait_for_port("127.0.0.1", moto_port, timeout_s=30)
        yield bed
    finally:
        for stop in reversed(bed.stops):
            stop()
        if ferret is not None:
            ferret.stop()
        moto.kill()
        moto.wait()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(xrootd_base, ignore_errors=True)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used (0 without a process to watch, or once it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have ended (and were waited for) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU seconds spent by roles (each a set of processes) over a stretch of a benchmark, so a
    rate can be told apart from the CPU it costs (on a 2-core machine the sum bounds the rate);
    `ended_children` names the role of the child processes that end within the stretch."""

    roles: dict[str, list[int | None]]
    ended_children: str | None = None
    _start: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        now = {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in self.roles.items()}
        if self.ended_children:
            now[self.ended_children] = children_cpu_seconds()
        return now

    def start(self) -> None:
        self._start = self._now()

    def ms_per(self, items: int) -> dict[str, float]:
        """CPU milliseconds per item of each role since `start`, and their total."""
        spent = {role: (value - self._start[role]) * 1000 / max(1, items) for role, value in self._now().items()}
        return {**{role: round(ms, 2) for role, ms in spent.items()}, "total": round(sum(spent.values()), 2)}


def start_server(uri: str, database: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m cairn server` of this tree on a free port, its log in the work directory."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_MONGODB_URI": uri, "CAIRN_DATABASE": database,
           "CAIRN_VAR_DIR": str(workdir / "var"), "CAIRN_API_PORT": str(port), "CAIRN_LOG_LEVEL": "WARNING"}
    with (workdir / "server.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "cairn", "server"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, timeout_s=60, proc=server)
    return server, port


def ferretdb_version() -> str:
    out = subprocess.run([find_ferretdb(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].removeprefix("version: ") if out else "unknown"


@dataclass
class ApiServer:
    """The API server of one benchmark run, on a database of its own, and an admin token for it."""

    workdir: Path
    uri: str
    database: str
    port: int
    token: str
    pid: int
    database_pid: int | None
    database_kind: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def api_server(prefix: str, mongodb_uri: str | None) -> Iterator[ApiServer]:
    """A scratch directory, the database (`mongodb_uri`, else FerretDB in the scratch directory)
    and `python -m cairn server` on it; all stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        ferret = None if mongodb_uri else start_ferretdb(workdir / "db")
        server = None
        try:
            uri = mongodb_uri or (ferret.uri if ferret else "")
            database = f"bench_{uuid.uuid4().hex[:8]}"
            settings = load_settings(mongodb_uri=uri, database=database, var_dir=workdir / "var")
            token = BuiltinIssuer.from_settings(settings).issue(sub="bench", vo="bench", groups=["bench"],
                                                                scopes=["admin"])
            server, port = start_server(uri, database, workdir)
            kind = "mongodb" if mongodb_uri else f"ferretdb-1.24-sqlite ({ferretdb_version()})"
            yield ApiServer(workdir, uri, database, port, token, server.pid,
                            ferret.process.pid if ferret else None, kind)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            if ferret is not None:
                ferret.stop()


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    """Seconds the action took."""
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


def rate(files: int, nbytes: int, seconds: float) -> dict[str, float]:
    """files/s and MB/s (10^6 bytes) of moving `files` files of `nbytes` bytes in all."""
    return {"files": files, "seconds": round(seconds, 2), "files_per_s": round(files / seconds, 2),
            "MB_per_s": round(nbytes / MB / seconds, 1)}


def phase_figures(seconds: dict[str, list[float]], cpu: dict[str, list[float]], counts: dict[str, int],
                  unit: str, pid: int | None) -> dict[str, dict[str, Any]]:
    """Per phase: its seconds per round, their median, and milliseconds and database CPU-ms per
    `unit` (`counts[phase]` of them per round; the CPU only when the database's pid is known)."""
    figures = {}
    for name, values in seconds.items():
        median, per = statistics.median(values), 1000 / counts[name]
        figures[name] = {"seconds": values, "median_s": round(median, 3), f"ms_per_{unit}": round(median * per, 4),
                         f"db_cpu_ms_per_{unit}": round(statistics.median(cpu[name]) * per, 4) if pid else None}
    return figures


def over(figures: dict[str, dict[str, Any]], phase: str, floor: str) -> float:
    """A phase's median over another's (the bare floor)."""
    return round(statistics.median(figures[phase]["seconds"]) / statistics.median(figures[floor]["seconds"]), 2)


@contextlib.asynccontextmanager
async def scratch_database(uri: str, prefix: str) -> AsyncIterator[Any]:
    """A fresh database of its own on the server at `uri`, dropped afterwards."""
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(uri, tz_aware=True)
    db = client[f"{prefix}_{uuid.uuid4().hex[:8]}"]
    try:
        yield db
    finally:
        await client.drop_database(db.name)
        await client.close()


def emit_by_size(prefix: str, sizes: str, measure: Callable[[str, int | None, int], Awaitable[dict[str, Any]]],
                 **fields: Any) -> None:
    """Run `measure(database URI, database pid, size)` for each of the comma-separated sizes on one
    testbed and print the figures by size (with `fields`)."""

    with testbed(prefix) as bed:
        results = {size: event_loop.run(measure(bed.database_uri, bed.database_pid, int(size)))
                   for size in sizes.split(",")}
        emit({"database": bed.database_kind, **fields, "by_size": results})


def emit(result: dict[str, Any]) -> None:
    """The figures, as the JSON every benchmark prints."""
    print(json.dumps(result, indent=2, ensure_ascii=False))
