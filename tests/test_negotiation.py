"""copy_between: the best protocol two SEs share for a third-party copy, else a stream through
the caller, between the real XRootD pair and S3; errors name the LFN and both SEs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cairn.sdk import Client
from catalogue.storage_elements import StorageElement
from kernel.errors import Forbidden, NotFound
from storage_plugins.errors import ChecksumMismatch
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload
from tests.test_upload_download_faults import flip_byte
from transfers.negotiation import copy_between, negotiate


async def _uploaded(admin: Client, live_ses: LiveSEs, kind: str, data: Payload, **kw: object) -> str:
    se = await live_ses.add(kind, **kw)  # type: ignore[arg-type]
    [result] = await admin.upload([data.path], "/cta/f", se.name, credentials=live_ses.credentials)
    assert result.status == "uploaded", result.error
    return se.name


async def _between_xrootd_servers(
    admin: Client, live_ses: LiveSEs, data: Payload
) -> tuple[str, StorageElement]:
    """`data` uploaded to an xrootd SE on the first server (its name), and an empty one on the second."""
    source = await _uploaded(admin, live_ses, "xrootd", data, server=0)
    return source, await live_ses.add("xrootd", server=1)


@pytest.mark.parametrize("kind", ["root", "davs"])
async def test_same_protocol_on_both_xrootd_servers_is_a_third_party_copy(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], kind: str
) -> None:
    data = payload(2 << 20)
    source = await _uploaded(admin, live_ses, kind, data, server=0)
    dest = await live_ses.add(kind, server=1)
    result = await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=data.adler32)
    assert (result.mode, result.protocol, result.bytes, result.adler32) == (
        "tpc", {"root": "root", "davs": "http"}[kind], data.size, data.adler32)
    assert live_ses.stored_file(dest.name, "/cta/f").stat().st_size == data.size


async def test_ses_offering_both_protocols_negotiate_http_tpc(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    data = payload(1000)
    source = await _uploaded(admin, live_ses, "xrootd", data, server=0)
    dest = await live_ses.add("xrootd", server=1)
    chosen = negotiate(live_ses.made[source], dest, "/cta/f")
    assert (chosen.plan.mode, chosen.plan.protocol) == ("tpc", "http")
    assert chosen.plan.dest.startswith("davs://") and "ca_file" in chosen.dest_options["davs"]
    result = await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=data.adler32)
    assert (result.mode, result.protocol) == ("tpc", "http")


async def test_a_destination_without_the_tpc_flag_gets_a_stream(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    data = payload(1000)
    source = await _uploaded(admin, live_ses, "root", data, server=0)
    dest = await live_ses.add("root", server=1, tpc=False)
    result = await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=data.adler32)
    assert (result.mode, result.adler32) == ("stream", data.adler32)


async def test_s3_to_xrootd_streams_through_the_caller(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    data = payload(3 << 20)
    source = await _uploaded(admin, live_ses, "s3", data)
    dest = await live_ses.add("root", server=1)
    result = await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=data.adler32,
                                credentials=live_ses.credentials)
    assert (result.mode, result.bytes, result.adler32) == ("stream", data.size, data.adler32)
    assert live_ses.stored_file(dest.name, "/cta/f").stat().st_size == data.size


async def test_a_corrupted_source_fails_naming_lfn_and_both_ses_and_leaves_no_copy(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    data = payload(1 << 20)
    source = await _uploaded(admin, live_ses, "root", data, server=0)
    dest = await live_ses.add("root", server=1)
    flip_byte(live_ses.stored_file(source, "/cta/f"), 500)
    with pytest.raises(ChecksumMismatch) as caught:
        await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=data.adler32)
    assert all(part in caught.value.message for part in ("/cta/f", source, dest.name))
    assert not live_ses.stored_file(dest.name, "/cta/f").exists()


async def test_a_missing_source_is_not_found_naming_lfn_and_ses(live_ses: LiveSEs) -> None:
    source, dest = await live_ses.add("davs", server=0), await live_ses.add("davs", server=1)
    with pytest.raises(NotFound) as caught:
        await copy_between(source, dest, "/cta/none", expected_adler32="00000001")
    assert all(part in caught.value.message for part in ("/cta/none", source.name, dest.name))


async def test_switched_off_ses_refuse_naming_the_se(live_ses: LiveSEs) -> None:
    source = await live_ses.add("root", server=0, read_enabled=False)
    dest = await live_ses.add("root", server=1)
    with pytest.raises(Forbidden, match=f"SE {source.name} is switched off for reading"):
        await copy_between(source, dest, "/cta/f", expected_adler32="00000001")
    no_writes = await live_ses.add("root", server=1, write_enabled=False)
    with pytest.raises(Forbidden, match=f"SE {no_writes.name} is switched off for writing"):
        await copy_between(dest, no_writes, "/cta/f", expected_adler32="00000001")


async def test_a_small_file_between_xrootd_ses_is_routed_through_the_caller_by_xrdcl(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    data = payload(1 << 20)
    source, dest = await _between_xrootd_servers(admin, live_ses, data)
    result = await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=data.adler32,
                                expected_size=data.size, route_below=data.size)
    assert (result.mode, result.protocol, result.bytes, result.adler32) == ("stream", "root", data.size, data.adler32)
    assert result.source.startswith("root://") and result.dest.startswith("root://")
    assert live_ses.stored_file(dest.name, "/cta/f").read_bytes() == data.path.read_bytes()


async def test_a_file_above_the_routing_size_keeps_its_third_party_copy(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    data = payload(1 << 20)
    source, dest = await _between_xrootd_servers(admin, live_ses, data)
    result = await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=data.adler32,
                                expected_size=data.size, route_below=data.size - 1)
    assert (result.mode, result.protocol) == ("tpc", "http")


async def test_a_routed_copy_whose_bytes_disagree_with_the_catalogue_fails_and_leaves_no_copy(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload]
) -> None:
    data = payload(1 << 20)
    source, dest = await _between_xrootd_servers(admin, live_ses, data)
    wrong = f"{(int(data.adler32, 16) + 1) & 0xFFFFFFFF:08x}"
    with pytest.raises(ChecksumMismatch) as caught:
        await copy_between(live_ses.made[source], dest, "/cta/f", expected_adler32=wrong,
                           expected_size=data.size, route_below=data.size)
    assert "/cta/f" in caught.value.message and source in caught.value.message
    assert not live_ses.stored_file(dest.name, "/cta/f").exists()
