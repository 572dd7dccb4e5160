"""The client side (the `cairn` data commands, the SDK, the pilot) does not load the database
driver: a user's `cairn upload` or `download` pays its import on every run (~0.1 s here, a quarter
of the command's start), a pilot on every job slot, and none of them has a database to talk to."""

from __future__ import annotations

import subprocess
import sys

from bench.harness import ROOT

CLIENT_MODULES = ("cairn.cli.main", "cairn.cli.data", "cairn.cli.files", "cairn.sdk", "dataio.upload",
                  "dataio.download", "dataio.fsspec_cairn", "wms.pilot")


def test_client_modules_leave_the_database_driver_out() -> None:
    code = f"import sys\nfor m in {CLIENT_MODULES!r}: __import__(m)\nprint(sorted(m for m in sys.modules " \
           "if m.split('.')[0] in ('pymongo', 'motor', 'bson')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "[]"
