"""copy(): third-party copies between the two XRootD servers over root and HTTP/WebDAV,
streamed copies between protocols that cannot meet, negotiation, and checksum verification."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.embedded_xrootd import XRootDServer
from kernel.errors import NotFound, ServiceUnavailable
from storage_plugins.copy import copy, plan_copy
from storage_plugins.errors import ChecksumMismatch
from storage_plugins.posix import file_url
from storage_plugins.registry import plugin_for
from tests.fixtures.payloads import Payload
from tests.fixtures.s3 import S3Endpoint
from tests.fixtures.xrootd import data_file

Pair = tuple[XRootDServer, XRootDServer]


def _dav_options(server: XRootDServer) -> dict[str, dict[str, str]]:
    ca = {"ca_file": str(server.tls.ca_file)}
    return {"davs": ca, "https": ca, "http": ca}


async def _upload(url: str, data: Payload, options: dict[str, str] | None = None) -> None:
    await plugin_for(url, options).put(data.path, url)


async def test_root_to_root_is_a_third_party_copy(
    xrootd_pair: Pair, xrootd_path: str, payload: Callable[[int], Payload]
) -> None:
    first, second = xrootd_pair
    data = payload(3 << 20)
    source, dest = f"{first.root_url}{xrootd_path}/f", f"{second.root_url}{xrootd_path}/sub/g"
    await _upload(source, data)
    log_start = first.log_file.stat().st_size
    result = await copy(source, dest)
    assert (result.mode, result.protocol, result.bytes, result.adler32) == (
        "tpc",
        "root",
        data.size,
        data.adler32,
    )
    assert data_file(second, f"{xrootd_path}/sub/g").stat().st_size == data.size
    # Another client than this process logged in to the source during the copy: the
    # destination server's own xrdcp, pulling the bytes.
    logins = re.findall(
        r"XrootdXeq: \S+?\.(\d+):\S+ .*login", first.log_file.read_bytes()[log_start:].decode()
    )
    assert {int(pid) for pid in logins} - {os.getpid()}


@pytest.mark.parametrize("tpc_mode", ["pull", "push"])
async def test_davs_to_davs_is_an_http_third_party_copy(
    xrootd_pair: Pair, xrootd_path: str, payload: Callable[[int], Payload], tpc_mode: str
) -> None:
    first, second = xrootd_pair
    data = payload(3 << 20)
    options = _dav_options(first)
    source, dest = f"{first.davs_url}{xrootd_path}/f", f"{second.davs_url}{xrootd_path}/{tpc_mode}/g"
    await _upload(source, data, options["davs"])
    result = await copy(source, dest, source_options=options, dest_options=options, tpc_mode=tpc_mode)  # type: ignore[arg-type]
    assert (result.mode, result.protocol, result.adler32) == ("tpc", "http", data.adler32)
    assert data_file(second, f"{xrootd_path}/{tpc_mode}/g").stat().st_size == data.size


async def test_negotiation_prefers_https_tpc_when_both_ends_offer_it(
    xrootd_pair: Pair, xrootd_path: str, payload: Callable[[int], Payload]
) -> None:
    first, second = xrootd_pair
    data = payload(1)
    options = _dav_options(first)
    sources = [f"{first.root_url}{xrootd_path}/f", f"{first.https_url}{xrootd_path}/f"]
    dests = [f"{second.root_url}{xrootd_path}/g", f"{second.davs_url}{xrootd_path}/g"]
    await _upload(sources[0], data)
    result = await copy(sources, dests, source_options=options, dest_options=options)
    assert (result.source, result.dest, result.mode) == (sources[1], dests[1], "tpc")


def test_plan_falls_back_to_a_stream_between_protocols_that_cannot_meet() -> None:
    assert plan_copy("s3://b/k", "root://h:1//p").mode == "stream"
    assert plan_copy("file:///a", "davs://h/p").mode == "stream"
    assert plan_copy(["s3://b/k", "root://h:1//p"], ["root://g:1//q"]).source == "root://h:1//p"
    plain = plan_copy(["http://h/p", "https://h/p"], ["http://g/q", "davs://g/q"])
    assert (plain.source, plain.dest) == ("https://h/p", "davs://g/q")


async def test_s3_to_root_streams_through_the_caller(
    s3_server: S3Endpoint,
    s3_bucket: str,
    xrootd: XRootDServer,
    xrootd_path: str,
    payload: Callable[[int], Payload],
) -> None:
    data = payload(20 << 20)
    source = f"s3://{s3_bucket}/f"
    await _upload(source, data, s3_server.options())
    result = await copy(
        source, f"{xrootd.root_url}{xrootd_path}/g", source_options={"s3": s3_server.options()}
    )
    assert (result.mode, result.bytes, result.adler32) == ("stream", data.size, data.adler32)


async def test_a_corrupted_replica_is_caught_and_its_copy_removed(
    xrootd_pair: Pair, xrootd_path: str, payload: Callable[[int], Payload]
) -> None:
    first, second = xrootd_pair
    data = payload(1 << 20)
    source, dest = f"{first.root_url}{xrootd_path}/f", f"{second.root_url}{xrootd_path}/g"
    await _upload(source, data)
    stored = data_file(first, f"{xrootd_path}/f")
    with stored.open("r+b") as handle:  # flip one byte on the server's disk
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(stored, (stored.stat().st_atime, stored.stat().st_mtime + 5))
    with pytest.raises(ChecksumMismatch) as caught:
        await copy(source, dest, expected_adler32=data.adler32)
    assert caught.value.expected == data.adler32 and dest in caught.value.message
    assert not data_file(second, f"{xrootd_path}/g").exists()


@pytest.mark.parametrize("kind", ["root", "davs"])
async def test_third_party_copy_of_a_missing_source_is_not_found(
    xrootd_pair: Pair, xrootd_path: str, kind: str
) -> None:
    first, second = xrootd_pair
    options = _dav_options(first)
    base = {"root": (first.root_url, second.root_url), "davs": (first.davs_url, second.davs_url)}[kind]
    source = f"{base[0]}{xrootd_path}/none"
    with pytest.raises(NotFound):
        await copy(
            source,
            f"{base[1]}{xrootd_path}/g",
            source_options=options,
            dest_options=options,
            expected_adler32="00000001",
        )


async def test_copy_to_a_stopped_server_is_service_unavailable(
    xrootd: XRootDServer, xrootd_stoppable: XRootDServer, xrootd_path: str, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"going nowhere")
    xrootd_stoppable.stop()
    options = {"davs": {"ca_file": str(xrootd_stoppable.tls.ca_file)}}
    for dest in (
        f"{xrootd_stoppable.root_url}{xrootd_path}/g",
        f"{xrootd_stoppable.davs_url}{xrootd_path}/g",
    ):
        with pytest.raises(ServiceUnavailable) as caught:
            await copy(file_url(source), dest, dest_options=options)
        assert dest in caught.value.message
