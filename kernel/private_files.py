"""Directories and files that only this account may open: the embedded default's state (its
database and the socket it listens on, the signing keys, the admin token)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Make path (and missing parents) a directory only its owner may enter; an existing one of
    this account loses its group and other bits too (one of another account is left as it is)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.stat().st_uid == os.geteuid():
        path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace path by data, readable by this account only from its first byte on: written to a
    new file created 0600 and renamed over path. A chmod after writing leaves a moment in which
    another account opens the file and keeps reading it, and rewriting an existing file keeps
    its old mode."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
