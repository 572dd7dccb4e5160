"""The auditor on real SEs (XRootD root://, WebDAV davs://, moto S3, local disk): a ruled copy
deleted on storage is found lost and copied back by its rule; a dark file is found and, on an
operator's request, deleted by the reaper; a file written within the grace period is not dark."""

from __future__ import annotations

import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue.storage_elements import StorageElement
from kernel import lease
from kernel.db import Document
from kernel.errors import InvalidInput
from kernel.settings import Settings
from rules import store
from rules.rule_models import RuleIn
from tests.fixtures.audit import audit_settings, on_storage, storage, write_on_storage
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.rules import dataset_on_src, rule_daemons, run_until, run_until_ok
from tests.fixtures.transfers import replica_status
from transfers.audit_compare import parse_dump_line
from transfers.auditor import Auditor
from transfers.reaper import Reaper

LFNS = [f"/cta/audit/f{i}" for i in range(3)]


async def ruled_copies(database: AsyncDatabase[Document], live_ses: LiveSEs, kind: str,
                       settings: Settings) -> StorageElement:
    """SRC (local disk) holding LFNS, and a rule keeping one copy of them on DST (of kind)."""
    await live_ses.add("file", name="SRC")
    dst = await live_ses.add(kind, name="DST", secrets_on_server=True)
    await dataset_on_src(database, "cta:audit", LFNS)
    rule = await store.create_rule(database, ADMIN, RuleIn(did="cta:audit", copies=1, expression="DST"))

    await run_until_ok(database, settings, rule["_id"], timeout_s=120)
    return dst


async def audit(admin: Client, database: AsyncDatabase[Document], settings: Settings, se: str,
                dump: str | None = None) -> dict[str, object]:
    run = await admin.queue_audit(se, dump=dump)
    await Auditor(settings, database).run(max_cycles=1)
    return await admin.audit_run(str(run["id"]))


@pytest.mark.parametrize("kind", ["root", "davs", "s3"])
async def test_a_ruled_copy_deleted_on_storage_is_found_lost_and_copied_back_and_dark_files_cleaned(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client, kind: str,
) -> None:
    fast = audit_settings(live_ses.api.settings, dark_grace_s=0)
    dst = await ruled_copies(database, live_ses, kind, fast)
    original = await on_storage(dst, LFNS[0], fast)
    assert original is not None
    plugin, url = storage(dst, LFNS[0], fast)
    async with plugin:
        await plugin.delete(url)  # behind the catalogue's back
    await write_on_storage(dst, "/cta/audit/dark.bin", b"nobody registered me", fast)

    run = await audit(admin, database, fast, "DST")
    counts = run["counts"]
    assert run["state"] == "done", run
    assert isinstance(counts, dict)
    assert (counts["lost"], counts["dark"], counts["matched"], counts["no_copy"]) == (1, 1, 2, 0), counts
    lost = [e async for e in admin.audit_entries(str(run["id"]), "lost")]
    assert [(e["lfn"], e["marked"], e["no_copy"]) for e in lost] == [(LFNS[0], True, False)]
    assert [e["lfn"] async for e in admin.audit_entries(str(run["id"]), "dark")] == ["/cta/audit/dark.bin"]
    assert await replica_status(database, LFNS[0], "DST") == "lost"

    async def repaired() -> bool:
        return await replica_status(database, LFNS[0], "DST") == "available"

    await run_until(repaired, rule_daemons(fast, database), timeout_s=120)
    assert await on_storage(dst, LFNS[0], fast) == original  # the bytes are back, on the storage itself

    answer = await admin.clean_dark(str(run["id"]))
    assert list(answer["successful"]) == ["/cta/audit/dark.bin"], answer
    await Reaper(fast, database).run(max_cycles=1)
    assert await on_storage(dst, "/cta/audit/dark.bin", fast) is None
    assert all([await on_storage(dst, lfn, fast) for lfn in LFNS])
    # Audited again, asking the server for each file's checksum: the repaired copy is the file's.
    again = await audit(admin, database, audit_settings(fast, checksums=True), "DST")
    counts = again["counts"]
    assert isinstance(counts, dict)
    assert (counts["lost"], counts["dark"], counts["checksum_mismatch"], counts["matched"]) == (0, 0, 0, 3), again


@pytest.mark.parametrize("kind", ["root", "davs", "s3"])
async def test_a_file_written_within_the_grace_period_is_not_called_dark(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client, kind: str,
) -> None:
    fast = audit_settings(live_ses.api.settings, dark_grace_s=3600)
    se = await live_ses.add(kind, name=f"YOUNG-{kind}", secrets_on_server=True)
    await write_on_storage(se, "/cta/inflight/f.bin", b"being uploaded", fast)
    run = await audit(admin, database, fast, se.name)
    counts = run["counts"]
    assert isinstance(counts, dict)
    assert (counts["dark"], counts["young"]) == (0, 1), counts
    assert [e async for e in admin.audit_entries(str(run["id"]))] == []


async def test_a_site_dump_on_the_se_is_compared_sorted_whatever_its_order(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client, tmp_path: Path,
) -> None:
    fast = audit_settings(live_ses.api.settings, dark_grace_s=0)
    se = await live_ses.add("file", name="DUMPED")
    registered = {"/cta/d/a": b"aaaa", "/cta/d/b": b"bb", "/cta/d/c": b"c"}
    for lfn, data in registered.items():
        await write_on_storage(se, lfn, data, fast)
    await write_on_storage(se, "/cta/d/c", b"ccccc", fast)  # c's bytes on storage are not the file's
    result = await admin.register_files([
        {"lfn": lfn, "size": len(data), "adler32": f"{zlib.adler32(data):08x}", "replicas": [{"se": "DUMPED"}]}
        for lfn, data in registered.items()])
    assert not result["failed"], result
    # the site's dump (unsorted, sizes optional): b is missing, c has the wrong size, x is dark
    dump = "# dump of DUMPED\n/cta/d/x 7\n/cta/d/c 5\n\n/cta/d/a\t4\n"
    await write_on_storage(se, "/dumps/today.txt", dump.encode(), fast)
    run = await audit(admin, database, fast, "DUMPED", dump="/dumps/today.txt")
    counts = run["counts"]
    assert isinstance(counts, dict)
    assert (counts["lost"], counts["dark"], counts["size_mismatch"], counts["matched"]) == (1, 1, 1, 2), counts
    found = {(e["kind"], e["lfn"]) async for e in admin.audit_entries(str(run["id"]))}
    assert found == {("lost", "/cta/d/b"), ("dark", "/cta/d/x"), ("size_mismatch", "/cta/d/c")}
    assert await replica_status(database, "/cta/d/b", "DUMPED") == "lost"
    assert await replica_status(database, "/cta/d/c", "DUMPED") == "bad"  # confirmed by a stat: 5 bytes
    lost = [e async for e in admin.audit_entries(str(run["id"]), "lost")]
    assert lost[0]["no_copy"] is True  # the only copy: reported
    parquet = tmp_path / "entries.parquet"
    assert await admin.audit_entries_to(str(run["id"]), parquet, kind="dark") > 0
    assert pq.read_table(parquet).column("lfn").to_pylist() == ["/cta/d/x"]


async def test_a_second_run_of_an_se_is_refused_while_one_is_open_and_audits_are_admin_only(
    live_ses: LiveSEs, admin: Client,
) -> None:
    await live_ses.add("file", name="BUSY")
    await admin.queue_audit("BUSY")
    with pytest.raises(Exception, match="queued or running already"):
        await admin.queue_audit("BUSY")
    with pytest.raises(Exception, match="does not exist"):
        await admin.queue_audit("NO-SUCH-SE")
    async with live_ses.api.client(live_ses.api.token()) as user:
        with pytest.raises(Exception, match="admin"):
            await user.audit_runs()


async def test_an_se_whose_audit_lease_another_auditor_holds_is_left_to_it(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client,
) -> None:
    fast = audit_settings(live_ses.api.settings)
    se = await live_ses.add("file", name="LEASED")
    await write_on_storage(se, "/cta/l/f", b"x", fast)
    run = await admin.queue_audit("LEASED")
    assert await lease.acquire(database, "auditor:LEASED", "auditor@elsewhere", lease_s=60)
    await Auditor(fast, database).run(max_cycles=1)
    assert (await admin.audit_run(str(run["id"])))["state"] == "queued"
    await lease.release(database, "auditor:LEASED", "auditor@elsewhere")
    await Auditor(fast, database).run(max_cycles=1)
    assert (await admin.audit_run(str(run["id"])))["state"] == "done"


async def test_an_se_whose_root_is_missing_fails_its_run_and_loses_nothing(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client,
) -> None:
    fast = audit_settings(live_ses.api.settings)
    await live_ses.add("file", name="UNMOUNTED")  # its directory was never made: as if unmounted
    result = await admin.register_files([{"lfn": "/cta/u/f", "size": 1, "adler32": "00020002",
                                          "replicas": [{"se": "UNMOUNTED"}]}])
    assert not result["failed"], result
    run = await audit(admin, database, fast, "UNMOUNTED")
    assert run["state"] == "failed" and "UNMOUNTED" in str(run["error"]), run
    assert await replica_status(database, "/cta/u/f", "UNMOUNTED") == "available"


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


async def test_a_dump_with_checksums_marks_replicas_whose_bytes_differ_bad_once_storage_confirms_it(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client,
) -> None:
    fast = audit_settings(live_ses.api.settings, dark_grace_s=0)
    se = await live_ses.add("file", name="SUMMED")
    files = {"/cta/s/good": b"good", "/cta/s/flipped": b"abcd", "/cta/s/stale": b"same", "/cta/s/short": b"long"}
    result = await admin.register_files([{"lfn": lfn, "size": len(data), "adler32": adler32(data),
                                          "replicas": [{"se": "SUMMED"}]} for lfn, data in files.items()])
    assert not result["failed"], result
    for lfn, data in files.items():
        await write_on_storage(se, lfn, data, fast)
    await write_on_storage(se, "/cta/s/flipped", b"abce", fast)  # same size, other bytes
    await write_on_storage(se, "/cta/s/short", b"lo", fast)
    dump = "".join([
        f"/cta/s/good 4 {adler32(b'good')}\n",
        f"/cta/s/flipped 4 {adler32(b'abce')}\n",
        f"/cta/s/stale\t4\t{adler32(b'old!')}\n",  # the dump is wrong: storage holds the right bytes
        "/cta/s/short\t2\n"])
    await write_on_storage(se, "/dumps/sums.txt", dump.encode(), fast)
    run = await audit(admin, database, fast, "SUMMED", dump="/dumps/sums.txt")
    counts = run["counts"]
    assert isinstance(counts, dict) and run["state"] == "done", run
    assert (counts["checksum_mismatch"], counts["size_mismatch"], counts["mismatch_rechecked"], counts["bad"]) == (
        1, 1, 1, 2), counts
    found = {e["lfn"]: e async for e in admin.audit_entries(str(run["id"]), "mismatch")}
    assert set(found) == {"/cta/s/flipped", "/cta/s/short"}
    flipped = found["/cta/s/flipped"]
    assert (flipped["kind"], flipped["adler32"], flipped["storage_adler32"], flipped["marked"]) == (
        "checksum_mismatch", adler32(b"abcd"), adler32(b"abce"), True)
    assert (found["/cta/s/short"]["kind"], found["/cta/s/short"]["storage_size"]) == ("size_mismatch", 2)
    statuses = {lfn: await replica_status(database, lfn, "SUMMED") for lfn in files}
    assert statuses == {"/cta/s/good": "available", "/cta/s/flipped": "bad", "/cta/s/stale": "available",
                        "/cta/s/short": "bad"}


@pytest.mark.parametrize("kind", ["root", "davs"])
async def test_a_live_listing_asks_the_server_for_checksums_when_told_and_marks_a_flipped_file_bad(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client, kind: str,
) -> None:
    plain = audit_settings(live_ses.api.settings, dark_grace_s=0)
    summing = audit_settings(live_ses.api.settings, dark_grace_s=0, checksums=True)
    se = await live_ses.add(kind, name=f"FLIP-{kind}", secrets_on_server=True)
    files = {"/cta/flip/kept": b"kept bytes", "/cta/flip/flipped": b"original!!"}
    result = await admin.register_files([{"lfn": lfn, "size": len(data), "adler32": adler32(data),
                                          "replicas": [{"se": se.name}]} for lfn, data in files.items()])
    assert not result["failed"], result
    await write_on_storage(se, "/cta/flip/kept", files["/cta/flip/kept"], plain)
    await write_on_storage(se, "/cta/flip/flipped", b"flipped!!!", plain)  # same size: only a checksum tells
    unsummed = await audit(admin, database, plain, se.name)
    assert unsummed["counts"]["checksum_mismatch"] == 0, unsummed  # type: ignore[index]
    run = await audit(admin, database, summing, se.name)
    assert run["counts"]["checksum_mismatch"] == run["counts"]["bad"] == 1, run  # type: ignore[index]
    [entry] = [e async for e in admin.audit_entries(str(run["id"]), "checksum_mismatch")]
    assert (entry["lfn"], entry["storage_adler32"], entry["marked"]) == (
        "/cta/flip/flipped", adler32(b"flipped!!!"), True)
    assert await replica_status(database, "/cta/flip/flipped", se.name) == "bad"
    assert await replica_status(database, "/cta/flip/kept", se.name) == "available"


def test_dump_lines_give_a_path_and_optionally_a_size_and_an_adler32() -> None:
    assert parse_dump_line("/cta/a", 1) == ("/cta/a", None, None)
    assert parse_dump_line("/cta/a 12", 1) == ("/cta/a", 12, None)
    assert parse_dump_line("/cta/a 12 0A1B2C3D", 1) == ("/cta/a", 12, "0a1b2c3d")
    assert parse_dump_line("/cta/a\t12\tab", 1) == ("/cta/a", 12, "000000ab")
    assert parse_dump_line("/cta/with space 12", 1) == ("/cta/with space", 12, None)
    assert parse_dump_line("/cta/with space", 1) == ("/cta/with space", None, None)
    assert parse_dump_line("  # comment", 1) is None
    with pytest.raises(InvalidInput, match="line 3: an adler32"):
        parse_dump_line("/cta/a\t12\txyz", 3)
    with pytest.raises(InvalidInput, match="line 4: a size"):
        parse_dump_line("/cta/a\ttwelve", 4)


async def test_cleaning_dark_files_leaves_the_ses_shared_plugin_open_for_its_other_users(
    database: AsyncDatabase[Document], live_ses: LiveSEs, admin: Client,
) -> None:
    """The reaper deletes a dark file with the process's shared plugin of the SE; it closed it after,
    breaking whatever else was reading through it (an S3 SE's one client)."""
    fast = audit_settings(live_ses.api.settings, dark_grace_s=0)
    se = await live_ses.add("s3", name="SHARED-S3", secrets_on_server=True)
    big = bytes(range(256)) * (64 << 10)  # 16 MiB: more than the connection buffers at once
    await write_on_storage(se, "/cta/k/big", big, fast)
    result = await admin.register_files([{"lfn": "/cta/k/big", "size": len(big), "adler32": adler32(big),
                                          "replicas": [{"se": se.name}]}])
    assert not result["failed"], result
    await write_on_storage(se, "/cta/k/dark.bin", b"nobody registered me", fast)
    run = await audit(admin, database, fast, se.name)
    assert await admin.clean_dark(str(run["id"]))
    plugin, url = storage(se, "/cta/k/big", fast)  # the instance the reaper uses too
    reading = plugin.read(url)
    read = bytearray(await anext(reading))
    await Reaper(fast, database).run(max_cycles=1)
    async for chunk in reading:
        read += chunk
    assert read == big
    assert await on_storage(se, "/cta/k/dark.bin", fast) is None
