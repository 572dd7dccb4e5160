"""Directories and files that only this account may open: the embedded default's state (its
database and the socket it listens on, the signing keys, the admin token)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from kernel.errors import ConfigurationError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# What a secret read from disk must not allow: writing by its group, anything by others. Its group
# may read it (a Kubernetes secret mounted 0440 for the pod's fsGroup).
UNSAFE_BITS = 0o027


def private_dir(path: Path) -> Path:
    """Make path (and missing parents) a directory only its owner may enter; an existing one of
    this account loses its group and other bits too. One of another account is refused: its owner
    could read and replace what is kept there (plant the signing key, read the logs and the SEs'
    files, reach the database's socket)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    owner = path.stat().st_uid
    if owner != os.geteuid():
        raise ConfigurationError(f"{path} belongs to another account (uid {owner}): not used for this "
                                 "account's state; give a directory of your own (--var or CAIRN_VAR_DIR)")
    path.chmod(PRIVATE_DIR)
    return path


def read_private(path: Path) -> bytes:
    """The bytes of a secret file that this account (or root) owns and no other account may read
    or rewrite: one planted by another account (a shared directory's ./var) or left readable
    would give whoever can read it the secret (the signing key: tokens of any user, admins'
    included). Checked on the opened file (a symlink's target, as Kubernetes mounts secrets), so a swap
    between the check and the read is no use."""
    fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid not in (os.geteuid(), 0):
            raise ConfigurationError(f"{path} belongs to another account (uid {info.st_uid}): not read as a "
                                     "secret of this one")
        if info.st_mode & UNSAFE_BITS:
            raise ConfigurationError(f"{path} may be read or written by other accounts (mode "
                                     f"{info.st_mode & 0o777:o}): not used; chmod 600 it (and make a new one "
                                     "if others may have read it)")
        return handle.read()


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
