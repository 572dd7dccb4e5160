"""Payloads under an account of their own (`CAIRN_WMS_PAYLOAD_USER`, `cairn pilot --payload-user`).

A payload runs whatever its job's owner wrote. As the pilot's own Unix user it could read all that
user can: on one machine (`cairn up`) the server's signing key, the admin token and the database,
that is every VO's data; on a batch node the pilot's files. A pilot running as root therefore runs
each payload as another account (`cairn up` as root: `nobody`), in a job directory of its own:
the directories go to a base the account can pass through but not list (0711, root's), each job's
is handed to the account for the payload (with the inputs the pilot fetched into it) and taken
back before the pilot reads the outputs, so that nothing the payload left behind (a process still
running, a link swapped in) can make the pilot read elsewhere. A pilot that is not root cannot
switch accounts, and refuses the setting.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel.errors import ConfigurationError
from kernel.process import child_preexec


@dataclass(frozen=True)
class PayloadAccount:
    name: str
    uid: int
    gid: int
    base: Path  # where the job directories are made
    made: bool = False  # the base was made for this pilot (and goes with it: `remove_base`)

    @classmethod
    def named(cls, name: str, base: Path | None = None) -> PayloadAccount:
        """The account `name` for payloads, its jobs' directories under `base` (default: a new
        directory in the system's temporary directory). Refused unless this process is root."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError as exc:
            raise ConfigurationError(f"payload user {name!r}: no such Unix account") from exc
        if entry.pw_uid == 0:
            raise ConfigurationError("the payload user must not be root")
        if os.geteuid() != 0:
            raise ConfigurationError(f"running payloads as {name!r} needs a pilot running as root")
        where = base or Path(tempfile.mkdtemp(prefix="cairn-payloads-"))
        where.mkdir(parents=True, exist_ok=True)
        os.chown(where, 0, 0)
        where.chmod(0o711)
        return cls(name, entry.pw_uid, entry.pw_gid, where.resolve(), made=base is None)

    def remove_base(self) -> None:
        """The pilot ends: the base it made goes (with any job directory a kill left there)."""
        if self.made:
            shutil.rmtree(self.base, ignore_errors=True)

    def hand_over(self, job_dir: Path) -> None:
        """Give the job directory and what is in it (the inputs, the log files) to the account."""
        _own(job_dir, self.uid, self.gid)

    def take_back(self, job_dir: Path) -> None:
        """Take the job directory back for the pilot, the directory itself first (from then on the
        account can change nothing in it), then what is in it."""
        _own(job_dir, 0, 0)

    def process_options(self, job_dir: Path) -> dict[str, Any]:
        """`asyncio.create_subprocess_exec` options that start the payload as the account in
        job_dir: the switch is made in the child before exec (`become`), not with subprocess's
        `user`/`group` options, which uvloop's subprocesses do not take (`kernel.event_loop`);
        and no `cwd`, which uvloop would enter after the switch (the account may not pass the
        directories above it)."""
        return {"preexec_fn": functools.partial(become, self.uid, self.gid, str(job_dir))}


def become(uid: int, gid: int, cwd: str) -> None:
    """Runs in the payload's child before exec: enter cwd (still as root), drop every group but
    the account's, then its gid and uid (real, effective and saved: there is no way back to
    root); fail, and so start nothing, unless the switch took. Then what every child of a Cairn
    process does (`child_preexec`: its death signal is set after the switch, which clears it)."""
    os.chdir(cwd)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError("the switch to the payload account did not take")
    child_preexec()


def _own(top: Path, uid: int, gid: int) -> None:
    """chown top and everything below it, top first, never following a link."""
    os.chown(top, uid, gid, follow_symlinks=False)
    top.chmod(0o700)
    for root, dirs, files in os.walk(top, followlinks=False):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
