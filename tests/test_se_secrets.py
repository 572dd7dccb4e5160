"""An SE's secrets (CAIRN_STORAGE_CREDENTIALS) are given once for all its protocols: each protocol's
plugin gets those it takes, so an SE with root:// and a WebDAV token (EOS) or with S3 keys and a
WebDAV token (Ceph RGW) works over each; and no error a user can read shows a secret."""

from __future__ import annotations

import traceback
import zlib

import pytest

from cairn.embedded_xrootd import XRootDServer
from catalogue.storage_elements import Protocol, StorageElement
from kernel.errors import CairnError, InvalidInput
from storage_plugins.registry import plugin_class
from storage_plugins.webdav import WebDavPlugin
from tests.fixtures.api import RunningApi
from tests.fixtures.authz import SHARED, World
from tests.fixtures.live_ses import LiveSEs, xrootd_protocols
from tests.fixtures.s3 import S3Endpoint
from tests.fixtures.transfers import add_ses, fast_settings, replica_status, run_until_drained
from transfers.endpoints import endpoints
from transfers.worker import TransferWorker

SECRET = "SE-BEARER-TOKEN-0123456789"
EOS = StorageElement(name="EOS", site="CERN", protocols=[
    Protocol(scheme="root", host="127.0.0.1", port=1, prefix="/eos/cta", priority=1),
    Protocol(scheme="davs", host="127.0.0.1", port=2, prefix="/eos/cta", priority=2),
])


def test_each_protocol_gets_only_the_secrets_its_plugin_takes() -> None:
    eps = endpoints(EOS, "/cta/f", "read", credentials={"EOS": {"token": SECRET}})
    assert {ep.scheme: ep.options for ep in eps} == {"root": {}, "davs": {"token": SECRET}}
    for ep in eps:
        plugin_class(ep.scheme)(ep.options)  # each plugin accepts what it is given


def test_a_secret_that_no_protocol_of_the_se_takes_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="tokne is an option of none") as caught:
        endpoints(EOS, "/cta/f", "read", credentials={"EOS": {"tokne": SECRET}})
    assert SECRET not in str(caught.value)


def test_invalid_plugin_options_are_named_without_the_values_given() -> None:
    with pytest.raises(InvalidInput) as caught:
        WebDavPlugin({"token": SECRET, "verify": SECRET, "tokne": SECRET})
    assert "verify" in caught.value.message and "tokne" in caught.value.message
    shown = "".join(traceback.format_exception(caught.value))  # what a log of it would show
    assert SECRET not in shown


async def test_a_transfer_to_an_se_with_root_and_a_webdav_token_goes_over_root(
    world: World, xrootd_pair: tuple[XRootDServer, XRootDServer], xrootd_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    se = StorageElement(name="EOS", site="CERN",
                        protocols=xrootd_protocols(xrootd_pair[0], xrootd_path, ("root", "davs"), tpc=False))
    await add_ses(world.db, se)
    settings = world.api.settings
    monkeypatch.setitem(settings.storage_credentials, "EOS", {"token": SECRET})
    status, answer = await world.call("bob", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "EOS"})
    assert status == 201, answer
    await run_until_drained(world.db, TransferWorker(fast_settings(settings, max_attempts=1), world.db), timeout_s=40)
    _, listing = await world.call("bob", "GET", "/requests", params={"lfn": SHARED})
    assert await replica_status(world.db, SHARED, "EOS") == "available", listing


async def test_a_failed_transfer_shows_its_requester_no_se_secret(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_ses(world.db, EOS)  # nothing listens on its ports: the copy fails
    settings = world.api.settings
    monkeypatch.setitem(settings.storage_credentials, "EOS", {"token": SECRET})
    status, answer = await world.call("bob", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "EOS"})
    assert status == 201, answer
    await run_until_drained(world.db, TransferWorker(fast_settings(settings, max_attempts=1), world.db), timeout_s=40)
    status, listing = await world.call("bob", "GET", "/requests", params={"lfn": SHARED})
    assert status == 200 and listing[0]["state"] == "failed", listing
    assert SECRET not in str(listing)


async def test_a_signed_url_is_issued_for_an_s3_se_that_also_has_a_webdav_token(
    api: RunningApi, live_ses: LiveSEs, s3_server: S3Endpoint
) -> None:
    se = await live_ses.add("s3", secrets_on_server=True)
    davs = Protocol(scheme="davs", host="127.0.0.1", port=2, prefix="/dav", priority=2)
    await live_ses.admin.put_se(se.model_copy(update={"protocols": [*se.protocols, davs]}).model_dump(mode="json"))
    api.settings.storage_credentials[se.name]["token"] = SECRET
    await live_ses.admin.register_files([{"lfn": "/cta/f", "size": 3, "adler32": f"{zlib.adler32(b'abc'):08x}",
                                          "mode": 0o644, "replicas": [{"se": se.name}]}])
    [replica] = (await live_ses.admin.get_file("/cta/f"))["replicas"]
    bucket, key = replica["url"].removeprefix("s3://").split("/", 1)
    async with s3_server.client() as s3:  # a GET URL is signed for the object there (its entity tag)
        await s3.put_object(Bucket=bucket, Key=key, Body=b"abc")
    async with api.client(api.token("bob", groups=("cta",), scopes=("catalogue.read",))) as bob:
        try:
            answer = await bob.signed_url("/cta/f", se.name, "GET")
        except CairnError as exc:
            pytest.fail(f"no signed URL: {exc.code}: {exc.message.replace(SECRET, '<the token>')}")
    assert answer["url"].startswith("http") and SECRET not in str(answer)
