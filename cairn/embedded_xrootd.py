"""Local XRootD 5 servers: `root://` and WebDAV (XrdHttp, http and https on one port) over one
data directory, adler32 checksums, third-party copy for both protocols, loopback clients only.

Used by the test bed and by `bench/storage_io.py`. Each server runs as a non-root user: when
started by root, the child drops to `nobody` before exec and its directories are handed over to
that user, so they live under a world-traversable temp dir rather than pytest's 0700 one. The
child drops privileges itself rather than through `xrootd -R nobody` because the kernel clears
PR_SET_PDEATHSIG on a credential change: with `-R`, a server outlived a SIGKILLed test run.

Why TLS is configured although every client is on loopback: XRootD 5.5 loads HTTP external
handlers, among them `libXrdHttpTPC.so` which answers WLCG HTTP-TPC `COPY` requests, only after
HTTPS has been initialised (`XrdHttpProtocol::Config` returns early, before
`LoadExtHandler`, when neither `xrd.tls` nor `http.cert` is given), and the TPC handler itself
refuses to start without a CA directory for its libcurl. Without `http.cert`/`http.key`/
`http.cadir` every `COPY` is answered "400 Request unknown". With them, the same port answers
plain http and https (XrdHttp sniffs the first bytes), and `COPY` works in pull mode (`Source:`)
and push mode (`Destination:`) over both, with `http://` or `https://` remote URLs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cairn.embedded_db import free_port, wait_for_port
from cairn.embedded_tls import TlsMaterial, make_loopback_tls
from kernel.errors import ConfigurationError
from kernel.process import child_preexec, stop_processes

XROOTD_HINT = (
    "XRootD 5 is needed for the root:// and WebDAV storage elements: "
    "apt-get install xrootd-server xrootd-server-plugins xrootd-client"
)
RUN_AS = "nobody"

CONFIG_TEMPLATE = """\
all.export /
all.role server
oss.localroot {data_dir}
all.adminpath {admin_dir}
all.pidpath {admin_dir}
xrd.port {root_port}
xrd.allow host localhost
xrd.protocol XrdHttp:{http_port} libXrdHttp.so
http.cert {cert_file}
http.key {key_file}
http.cadir {ca_dir}
http.exthandler xrdtpc libXrdHttpTPC.so
# Checksums the server computes at once: beyond the limit a client is told to come back later
# (XrdCl waited ~30 s), and every routed copy asks the destination for its adler32.
xrootd.chksum max 32 adler32
ofs.tpc ttl 60 70 xfr 20 pgm {xrdcp} --server
"""


@dataclass
class XRootDServer:
    """One running xrootd; data_dir is what both protocols serve as `/`."""

    name: str
    process: subprocess.Popen[bytes]
    root_port: int
    http_port: int
    data_dir: Path
    log_file: Path
    tls: TlsMaterial

    # URLs name 127.0.0.1, not localhost: root:// TPC with "localhost" makes the source wait for
    # a destination it never recognises ("tpc authorization expired"), and the certificate
    # carries the address as well as the name.
    @property
    def root_url(self) -> str:
        """Base of root:// URLs: append an absolute path, giving root://127.0.0.1:port//path."""
        return f"root://127.0.0.1:{self.root_port}/"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def davs_url(self) -> str:
        return f"davs://127.0.0.1:{self.http_port}"

    def stop(self, timeout_s: float = 10) -> None:
        stop_processes([self.process], timeout_s=timeout_s)

    def wait_until_up(self, timeout_s: float = 30) -> None:
        """Return once both ports answer; ConfigurationError with the log if the server does not."""
        try:
            wait_for_port("127.0.0.1", self.root_port, timeout_s=timeout_s, proc=self.process)
            wait_for_port("127.0.0.1", self.http_port, timeout_s=timeout_s, proc=self.process)
        except ConfigurationError as exc:
            self.stop()
            raise ConfigurationError(
                f"xrootd {self.name!r} did not start ({exc}). {XROOTD_HINT}. Its log:\n{self.log_tail()}"
            ) from exc

    def start_again(self, timeout_s: float = 30) -> None:
        """Start a server that exited with its own configuration: same ports, same data. One that
        does not come up (an xrootd that crashed may crash again replaying the recovery state it
        left in its admin directory: checkpoints, posc.log) is started once more on a fresh admin
        directory, the old one kept beside it (`admin.crashed-N`) for a post-mortem."""
        home = self.data_dir.parent
        self.stop()
        self.process = _spawn(find_xrootd()[0], home)
        try:
            self.wait_until_up(timeout_s)
            return
        except ConfigurationError:
            admin = home / "admin"
            kept = next(p for n in range(1, 1000) if not (p := home / f"admin.crashed-{n}").exists())
            admin.rename(kept)
            admin.mkdir()
            _hand_over(admin)
        self.process = _spawn(find_xrootd()[0], home)
        self.wait_until_up(timeout_s)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def find_xrootd() -> tuple[str, str]:
    """Paths of the xrootd server and the xrdcp client (needed for root:// TPC)."""
    xrootd, xrdcp = shutil.which("xrootd"), shutil.which("xrdcp")
    if xrootd is None:
        raise ConfigurationError(f"`xrootd` not found on PATH. {XROOTD_HINT}")
    if xrdcp is None:
        raise ConfigurationError(f"`xrdcp` not found on PATH. {XROOTD_HINT}")
    return xrootd, xrdcp


def _as_root() -> bool:
    return os.geteuid() == 0


def _drop_privileges_and_die_with_parent() -> None:
    """Runs in the child before exec: become the server user, then arm the parent-death signal."""
    if _as_root():
        user = pwd.getpwnam(RUN_AS)
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    child_preexec()


def _hand_over(path: Path) -> None:
    """Give a tree to the unprivileged server user (only when we are root)."""
    if not _as_root():
        return
    user = pwd.getpwnam(RUN_AS)
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def make_base_dir(prefix: str = "cairn-xrootd-") -> Path:
    """A temp dir the server user can reach: /tmp is traversable, pytest's base dir is not."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("CAIRN_XROOTD_TMP", "/tmp")))
    base.chmod(0o755)
    return base


def start_xrootd(base_dir: Path, name: str, tls: TlsMaterial, *, timeout_s: float = 30) -> XRootDServer:
    """Start one xrootd with its files under base_dir/name and wait until both ports answer."""
    xrootd, xrdcp = find_xrootd()
    home = base_dir / name
    data_dir, admin_dir = home / "data", home / "admin"
    for directory in (data_dir, admin_dir):
        directory.mkdir(parents=True, exist_ok=True)
    root_port, http_port = free_port(), free_port()
    while http_port == root_port:
        http_port = free_port()
    config = home / "xrootd.cfg"
    config.write_text(
        CONFIG_TEMPLATE.format(
            data_dir=data_dir,
            admin_dir=admin_dir,
            root_port=root_port,
            http_port=http_port,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            ca_dir=tls.ca_dir,
            xrdcp=xrdcp,
        )
    )
    _hand_over(home)
    server = XRootDServer(name, _spawn(xrootd, home), root_port, http_port, data_dir, home / "xrootd.log", tls)
    server.wait_until_up(timeout_s)
    return server


def _spawn(xrootd: str, home: Path) -> subprocess.Popen[bytes]:
    """Run xrootd with the configuration under home, logging there."""
    args = [xrootd, "-c", str(home / "xrootd.cfg"), "-l", str(home / "xrootd.log")]
    with (home / "stdout.log").open("ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
            preexec_fn=_drop_privileges_and_die_with_parent,
        )


def make_tls(base_dir: Path) -> TlsMaterial:
    """TLS material under base_dir/tls, readable by the server user."""
    tls = make_loopback_tls(base_dir / "tls")
    _hand_over(base_dir / "tls")
    return tls


def start_xrootd_pair(base_dir: Path) -> tuple[XRootDServer, XRootDServer]:
    """Two servers sharing one CA (so each trusts the other for HTTP TPC)."""
    tls = make_tls(base_dir)
    first = start_xrootd(base_dir, "se-a", tls)
    try:
        second = start_xrootd(base_dir, "se-b", tls)
    except BaseException:
        first.stop()
        raise
    return first, second
