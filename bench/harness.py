"""What the benchmarks that start servers share: a scratch directory, moto in its own process,
the database ($CAIRN_MONGODB_URI, else FerretDB in the scratch directory), whatever else they
start stopped in reverse order, the clock, rates, and the JSON they print."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.embedded_db import free_port, start_ferretdb, wait_for_port
from cairn.embedded_xrootd import make_base_dir
from kernel.process import child_preexec

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
                  "CAIRN_MONGODB_URI" if given_uri else "FerretDB 1.24 (SQLite)")
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


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    """Seconds the action took."""
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


def rate(files: int, nbytes: int, seconds: float) -> dict[str, float]:
    """files/s and MB/s (10^6 bytes) of moving `files` files of `nbytes` bytes in all."""
    return {"files": files, "seconds": round(seconds, 2), "files_per_s": round(files / seconds, 2),
            "MB_per_s": round(nbytes / MB / seconds, 1)}


def emit(result: dict[str, Any]) -> None:
    """The figures, as the JSON every benchmark prints."""
    print(json.dumps(result, indent=2, ensure_ascii=False))
