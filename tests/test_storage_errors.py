"""Choosing a plugin, and the errors every caller can rely on: each names its URL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cairn.embedded_db import free_port
from cairn.embedded_xrootd import XRootDServer
from kernel.errors import Forbidden, InvalidInput, ServiceUnavailable
from storage_plugins.errors import NotSupported
from storage_plugins.registry import plugin_for
from storage_plugins.s3 import S3Plugin
from tests.fixtures.xrootd import data_file


def test_unknown_scheme_is_invalid_input_naming_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        plugin_for("gopher://host/file")
    assert "'gopher'" in caught.value.message and "root" in caught.value.message


def test_url_without_scheme_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        plugin_for("/just/a/path")


def test_unknown_option_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        plugin_for("s3://bucket/key", {"endpoint": "http://typo"})
    assert "endpoint" in caught.value.message


def test_same_scheme_and_options_share_one_plugin() -> None:
    first = plugin_for("s3://a/x", {"region": "eu-west-1"})
    assert first is plugin_for("s3://b/y", {"region": "eu-west-1"})
    assert isinstance(first, S3Plugin)
    assert first is not plugin_for("s3://a/x", {"region": "eu-west-2"})


@pytest.mark.parametrize("scheme", ["root", "davs"])
async def test_closed_port_is_service_unavailable(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}//nothing/here"
    with pytest.raises(ServiceUnavailable) as caught:
        await plugin_for(url).stat(url)
    assert url in caught.value.message


async def test_stopped_server_is_service_unavailable(
    xrootd_stoppable: XRootDServer, xrootd_path: str
) -> None:
    root_url = f"{xrootd_stoppable.root_url}{xrootd_path}/f"
    dav_url = f"{xrootd_stoppable.davs_url}{xrootd_path}/f"
    dav_options = {"ca_file": str(xrootd_stoppable.tls.ca_file)}
    await plugin_for(root_url).write(root_url, _chunks(b"before"))
    xrootd_stoppable.stop()
    for url, options in ((root_url, None), (dav_url, dav_options)):
        with pytest.raises(ServiceUnavailable) as caught:
            await plugin_for(url, options).stat(url)
        assert url in caught.value.message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file the unprivileged server user cannot read")
@pytest.mark.parametrize("kind", ["root", "davs"])
async def test_unreadable_file_is_forbidden(
    xrootd: XRootDServer, xrootd_path: str, kind: str, tmp_path: Path
) -> None:
    secret = data_file(xrootd, f"{xrootd_path}/secret")
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"root only")
    secret.chmod(0o600)  # owned by root; the server runs as nobody
    base = xrootd.root_url if kind == "root" else xrootd.davs_url
    url = f"{base}{xrootd_path}/secret"
    plugin = plugin_for(url, {"ca_file": str(xrootd.tls.ca_file)} if kind == "davs" else None)
    with pytest.raises(Forbidden) as caught:
        await plugin.get(url, tmp_path / "copy")
    assert url in caught.value.message


async def test_root_cannot_issue_time_limited_urls(xrootd: XRootDServer) -> None:
    url = f"{xrootd.root_url}/f"
    with pytest.raises(NotSupported):
        await plugin_for(url).signed_url(url)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
