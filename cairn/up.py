"""`cairn up`: the embedded default on one machine.

Starts FerretDB (data under ./var/db, listening on a socket there) unless a database URI is
configured, creates two local disk SEs under ./var/se, issues an admin token, then runs the API
server and every daemon as child processes, restarting any that dies with a growing delay — the
embedded FerretDB too, on the same socket and data, so the API's /health comes back to ok by
itself; every exit and restart is logged.
Ctrl-C (or SIGTERM) stops all of it; children also die with this process if it is killed outright
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from cairn.components import daemon_factories, index_specs
from cairn.embedded_db import EmbeddedDatabase, start_ferretdb, wait_for_port
from catalogue.storage_elements import Protocol, StorageElement, put_storage_element
from catalogue.vos import ensure_default_vo
from kernel import event_loop
from kernel.client import CLIENT_FILE
from kernel.db import close_client, ensure_indexes, get_database
from kernel.errors import ConfigurationError
from kernel.principal import DEFAULT_VO
from kernel.private_files import private_dir, write_private
from kernel.process import child_preexec, stop_processes
from kernel.settings import Settings
from kernel.tokens import BuiltinIssuer

LOCAL_SITE = "LOCAL"
LOCAL_SES = ("LOCAL-DISK1", "LOCAL-DISK2")


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_path: Path | None = None
    before_start: Callable[[], None] | None = None  # run before each (re)start


class StopSignals:
    """SIGINT and SIGTERM ask `cairn up` to stop: noted in `asked`, and raised as
    KeyboardInterrupt to cut a blocking step short. The note is what counts: CPython also runs a
    signal's handler inside callbacks of its own, where what it raises is printed ("Exception
    ignored in ...") and dropped; a Ctrl-C that came while a child was forked landed in logging's
    at-fork hook that way, and `cairn up` went on running."""

    def __init__(self) -> None:
        self.asked = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.asked.set()
        raise KeyboardInterrupt


@dataclass
class Supervisor:
    settings: Settings
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    database: Child | None = None

    def start(self, child: Child) -> None:
        assert child.log_path is not None
        if child.before_start is not None:
            child.before_start()
        log = child.log_path.open("ab")
        child.process = subprocess.Popen(
            child.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec
        )
        log.close()
        if child.restarts:
            print(f"cairn up: restarted {child.name} (restart {child.restarts}, pid {child.process.pid})",
                  file=sys.stderr, flush=True)

    def watch(self, stop: threading.Event) -> None:
        """Restart children (and the embedded database) that exit, with a growing delay, until
        `stop` is set."""
        while not stop.is_set():
            now = time.monotonic()
            for child in [*([self.database] if self.database else []), *self.children]:
                proc = child.process
                if proc is not None and proc.poll() is not None:
                    child.restarts += 1
                    delay = min(30.0, 2.0 ** min(child.restarts, 5))
                    print(f"cairn up: {child.name} exited with {proc.returncode}; restarting in {delay:.0f}s",
                          file=sys.stderr, flush=True)
                    child.process = None
                    child.next_start = now + delay
                if child.process is None and now >= child.next_start:
                    self.start(child)
            stop.wait(0.5)

    def stop_all(self, timeout_s: float = 15) -> None:
        """Stop the children, then the database they were using."""
        stop_processes([c.process for c in self.children if c.process is not None], timeout_s=timeout_s)
        if self.database is not None and self.database.process is not None:
            stop_processes([self.database.process], timeout_s=timeout_s)


def local_storage_elements(var_dir: Path) -> list[StorageElement]:
    ses = []
    for index, name in enumerate(LOCAL_SES, start=1):
        root = (var_dir / "se" / f"disk{index}").resolve()
        root.mkdir(parents=True, exist_ok=True)
        ses.append(
            StorageElement(
                name=name,
                site=LOCAL_SITE,
                kind="disk",
                protocols=[Protocol(scheme="file", prefix=str(root), third_party_copy=False)],
                attributes={"tier": 2, "local": True},
            )
        )
    return ses


async def prepare(settings: Settings, vo: str = DEFAULT_VO) -> None:
    """Indexes, the local SEs and the VO `vo` rooted at `/` (when no VO is registered yet);
    idempotent, so a second `cairn up` finds everything again."""
    db = get_database(settings)
    try:
        await ensure_indexes(db, index_specs())
        for se in local_storage_elements(settings.var_dir):
            await put_storage_element(db, se)
        await ensure_default_vo(db, vo)
    finally:
        await close_client()


PAYLOAD_USER = "CAIRN_WMS_PAYLOAD_USER"


def child_commands(settings: Settings) -> list[tuple[str, list[str]]]:
    py = [sys.executable, "-m", "cairn"]
    commands = [("server", [*py, "server"])]
    commands += [(f"daemon-{name}", [*py, "daemon", name]) for name in sorted(daemon_factories())]
    # A payload runs what its job's owner wrote: as this account it could read var (the signing
    # key, the admin token, the database). Run as root, payloads get an account of their own.
    account = ["--payload-user", "nobody"] if os.geteuid() == 0 and not os.environ.get(PAYLOAD_USER) else []
    for site in sorted({LOCAL_SITE}):
        work_dir = settings.var_dir / "pilots" / site
        commands.append((f"pilot-{site}", [*py, "pilot", "--site", site, "--work-dir", str(work_dir), *account]))
    return commands


def only_up(var_dir: Path) -> IO[bytes]:
    """An exclusive lock on var/up.lock, held as long as the returned file is open (the kernel drops
    it when this process ends, however it ends: no stale lock after a crash). A second `cairn up`
    on the same var would remove the first's database socket, start a second FerretDB on its files
    and, stopping, remove the socket again: the first's services would lose their database."""
    handle = (var_dir / "up.lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigurationError(f"another `cairn up` runs on {var_dir}: stop it first, or give another "
                                 "--var") from None
    return handle


def run_up(settings: Settings, *, vo: str) -> int:
    """Run everything on one machine; the admin token is of VO `vo` (default `local`), the VO
    rooted at `/` that `prepare` registers, whose admins are global admins (catalogue.vos)."""
    # Only this account may enter var: the admin token, the signing keys, the local SEs' files
    # and the embedded database (on a socket in var/db: it has no accounts of its own).
    var_dir = private_dir(settings.var_dir.resolve())
    held = only_up(var_dir)  # noqa: F841 (held until this process ends)
    (var_dir / "log").mkdir(exist_ok=True)
    embedded: EmbeddedDatabase | None = None
    if settings.mongodb_uri is None:
        embedded = start_ferretdb(var_dir / "db", private=True)
        print(f"cairn up: FerretDB on {embedded.uri} (data in {var_dir / 'db'})", flush=True)
    uri = settings.mongodb_uri or (embedded.uri if embedded else "")
    settings = settings.model_copy(update={"mongodb_uri": uri, "var_dir": var_dir})
    supervisor: Supervisor | None = None

    stop = StopSignals()
    # Explicit for SIGINT too: a process started in the background of a non-interactive shell
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        event_loop.run(prepare(settings, vo))
        issuer = BuiltinIssuer.from_settings(settings)
        token = issuer.issue(sub="admin", vo=vo, groups=[vo], scopes=["admin"], lifetime_s=30 * 86400)
        url = settings.resolved_api_url
        client_file = var_dir / CLIENT_FILE
        write_private(client_file, json.dumps({"url": url, "token": token}).encode())

        env = dict(os.environ)
        env.update({
            "CAIRN_MONGODB_URI": uri,
            "CAIRN_VAR_DIR": str(var_dir),
            "CAIRN_API_HOST": settings.api_host,
            "CAIRN_API_PORT": str(settings.api_port),
            "CAIRN_DATABASE": settings.database,
        })
        supervisor = Supervisor(settings, env)
        if embedded is not None:
            supervisor.database = Child("ferretdb", embedded.argv, process=embedded.process,
                                        log_path=embedded.log_file, before_start=embedded.prepare)
        for name, argv in child_commands(settings):
            supervisor.children.append(Child(name, argv, log_path=var_dir / "log" / f"{name}.log"))
        server = supervisor.children[0]
        supervisor.start(server)
        assert server.process is not None
        wait_for_port(settings.api_host, settings.api_port, timeout_s=60, proc=server.process)
        for child in supervisor.children[1:]:
            supervisor.start(child)
        print(f"cairn up: API at {url}  (health: {url}/api/v1/health)", flush=True)
        print(f"cairn up: portal at {url}/ui/  (log in with the admin token below)", flush=True)
        print(f"cairn up: admin token (also in {client_file}):\n{token}", flush=True)
        print(f"cairn up: local SEs {', '.join(LOCAL_SES)} under {var_dir / 'se'}; logs in {var_dir / 'log'}",
              flush=True)
        print("cairn up: running; press Ctrl-C to stop", flush=True)
        supervisor.watch(stop.asked)
    except KeyboardInterrupt:
        stop.asked.set()  # a KeyboardInterrupt is a stop request (StopSignals noted it as well)
    finally:
        if stop.asked.is_set():
            print("\ncairn up: stopping", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if supervisor is not None:
            supervisor.stop_all()
        if embedded is not None:
            embedded.stop()  # stopped already with the supervisor's children; its socket goes now
        print("cairn up: stopped", flush=True)
    return 0
