"""XrdCl's settings in Cairn's processes (`storage_plugins.xrdcl_copy.XRDCL_DEFAULTS`), seen in
what a routed copy sends to the servers: plain reads and writes, without XRootD 5's per-page
crc32c (every copy is checked end to end by the destination's adler32 instead), unless the
operator's environment asks for page reads and writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

from cairn.embedded_xrootd import XRootDServer
from tests.fixtures.xrootd import data_file

ROOT = Path(__file__).resolve().parent.parent
# XrdCl reads its settings once per process: each copy runs in a process of its own.
COPY = """
import sys
from storage_plugins.xrdcl_copy import copy_routed
copied = copy_routed(sys.argv[1], sys.argv[2], expected_adler32=sys.argv[3], timeout_s=30)
print(copied.size, copied.adler32)
"""


def _requests_of_a_routed_copy(pair: tuple[XRootDServer, XRootDServer], path: str, log: Path,
                               operators_setting: str | None) -> tuple[Counter[str], bytes]:
    """Copy a file from the first server to the second as the transfer workers do, with XrdCl's
    log at its most detailed and the operator's XRD_CPUSEPGWRTRD (none: not set; this process
    may have set it, loading XrdCl); the requests it sent, and the bytes it copied."""
    first, second = pair
    data = os.urandom(300_000)
    source = data_file(first, f"{path}/f")
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    adler32 = f"{zlib.adler32(data):08x}"
    environment = {k: v for k, v in os.environ.items() if k != "XRD_CPUSEPGWRTRD"}
    environment |= {"XRD_LOGLEVEL": "Dump", "XRD_LOGFILE": str(log)}
    if operators_setting is not None:
        environment["XRD_CPUSEPGWRTRD"] = operators_setting
    done = subprocess.run(
        [sys.executable, "-c", COPY, f"{first.root_url}{path}/f", f"{second.root_url}{path}/g", adler32],
        env=environment, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(data)), adler32]
    sent = Counter(re.findall(r"Successfully sent message: (kXR_\w+)", log.read_text()))
    return sent, data


def test_a_routed_copy_sends_plain_reads_and_writes(
    xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_path: str, tmp_path: Path
) -> None:
    sent, data = _requests_of_a_routed_copy(xrootd_pair, xrootd_path, tmp_path / "xrdcl.log", None)
    assert sent["kXR_read"] >= 1 and sent["kXR_write"] >= 1, sent
    assert sent["kXR_pgread"] == 0 and sent["kXR_pgwrite"] == 0, sent
    assert data_file(xrootd_pair[1], f"{xrootd_path}/g").read_bytes() == data  # on the destination's disk


def test_the_operators_setting_of_page_reads_and_writes_is_kept(
    xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_path: str, tmp_path: Path
) -> None:
    sent, data = _requests_of_a_routed_copy(xrootd_pair, xrootd_path, tmp_path / "xrdcl.log", "1")
    assert sent["kXR_pgread"] >= 1 and sent["kXR_pgwrite"] >= 1, sent
    assert sent["kXR_read"] == 0 and sent["kXR_write"] == 0, sent
    assert data_file(xrootd_pair[1], f"{xrootd_path}/g").read_bytes() == data
