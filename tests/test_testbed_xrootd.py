"""The XRootD servers of the test bed: root:// and WebDAV over one directory, adler32, TPC."""

from __future__ import annotations

import asyncio
import os
import ssl
import zlib
from pathlib import Path

import aiohttp

from cairn.embedded_tls import TlsMaterial
from cairn.embedded_xrootd import XRootDServer
from tests.fixtures.xrootd import data_file


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode()


def _session(tls: TlsMaterial) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


def test_server_runs_as_a_non_root_user(xrootd: XRootDServer) -> None:
    status = Path(f"/proc/{xrootd.process.pid}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid != "0"


async def test_root_protocol_round_trips_bytes(
    xrootd: XRootDServer, xrootd_path: str, tmp_path: Path
) -> None:
    payload = os.urandom(100_000)
    local, back = tmp_path / "up", tmp_path / "down"
    local.write_bytes(payload)
    url = f"{xrootd.root_url}/{xrootd_path}/f"
    await _run("xrdcp", "-s", "-f", str(local), url)
    await _run("xrdcp", "-s", "-f", url, str(back))
    assert back.read_bytes() == payload
    answer = await _run("xrdfs", f"127.0.0.1:{xrootd.root_port}", "query", "checksum", f"{xrootd_path}/f")
    assert answer.split()[:2] == ["adler32", f"{zlib.adler32(payload):08x}"]


async def test_webdav_over_https_round_trips_bytes_with_adler32(
    xrootd: XRootDServer, xrootd_tls: TlsMaterial, xrootd_path: str
) -> None:
    payload = os.urandom(100_000)
    url = f"{xrootd.https_url}{xrootd_path}/f"
    async with _session(xrootd_tls) as session:
        async with session.put(url, data=payload) as put:
            assert put.status in (200, 201), await put.text()
        async with session.get(url, headers={"Want-Digest": "adler32"}) as got:
            assert await got.read() == payload
            assert got.headers["Digest"] == f"adler32={zlib.adler32(payload):08x}"
    assert data_file(xrootd, f"{xrootd_path}/f").read_bytes() == payload


async def test_root_and_webdav_serve_the_same_directory(
    xrootd: XRootDServer, xrootd_tls: TlsMaterial, xrootd_path: str, tmp_path: Path
) -> None:
    local = tmp_path / "up"
    local.write_bytes(b"same bytes")
    await _run("xrdcp", "-s", "-f", str(local), f"{xrootd.root_url}/{xrootd_path}/f")
    async with _session(xrootd_tls) as session, session.get(f"{xrootd.http_url}{xrootd_path}/f") as got:
        assert await got.read() == b"same bytes"


async def test_root_third_party_copy_between_the_two_servers(
    xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_path: str, tmp_path: Path
) -> None:
    first, second = xrootd_pair
    local = tmp_path / "up"
    local.write_bytes(os.urandom(50_000))
    await _run("xrdcp", "-s", "-f", str(local), f"{first.root_url}/{xrootd_path}/f")
    await _run(
        "xrdcp",
        "-s",
        "--tpc",
        "only",
        f"{first.root_url}/{xrootd_path}/f",
        f"{second.root_url}/{xrootd_path}/g",
    )
    assert data_file(second, f"{xrootd_path}/g").read_bytes() == local.read_bytes()


async def _http_copy(session: aiohttp.ClientSession, target: str, header: str, other: str) -> str:
    async with session.request("COPY", target, headers={header: other}) as response:
        body = await response.text()
        assert response.status in (201, 202), body
        return body


async def test_https_third_party_copy_pulls_and_pushes(
    xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_tls: TlsMaterial, xrootd_path: str
) -> None:
    first, second = xrootd_pair
    payload = os.urandom(70_000)
    source = f"{first.https_url}{xrootd_path}/f"
    async with _session(xrootd_tls) as session:
        async with session.put(source, data=payload) as put:
            assert put.status in (200, 201)
        async with session.request("MKCOL", f"{second.https_url}{xrootd_path}") as made:
            assert made.status == 201
        pulled = await _http_copy(session, f"{second.https_url}{xrootd_path}/pulled", "Source", source)
        pushed = await _http_copy(session, source, "Destination", f"{second.https_url}{xrootd_path}/pushed")
    assert pulled.strip().splitlines()[-1].startswith("success")
    assert pushed.strip().splitlines()[-1].startswith("success")
    assert data_file(second, f"{xrootd_path}/pulled").read_bytes() == payload
    assert data_file(second, f"{xrootd_path}/pushed").read_bytes() == payload


async def test_plain_http_third_party_copy_pulls(
    xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_tls: TlsMaterial, xrootd_path: str
) -> None:
    first, second = xrootd_pair
    source = f"{first.http_url}{xrootd_path}/f"
    async with _session(xrootd_tls) as session:
        async with session.put(source, data=b"plain") as put:
            assert put.status in (200, 201)
        async with session.request("MKCOL", f"{second.http_url}{xrootd_path}") as made:
            assert made.status == 201
        body = await _http_copy(session, f"{second.http_url}{xrootd_path}/pulled", "Source", source)
    assert body.strip().splitlines()[-1].startswith("success")
    assert data_file(second, f"{xrootd_path}/pulled").read_bytes() == b"plain"
