"""The reaper undoes uploads that died for good (`transfers.abandoned_uploads`): a `copying` replica
whose upload has been silent for `abandoned_upload_s` loses its bytes and its registration (the
record too when the upload founded it), and its SE's usage; what a live upload, a transfer, a
hand registration or a returning upload holds is left alone. An undo cut short between its claim
(`unavailable`) and its removal is finished the same way; an `unavailable` set otherwise is not."""

from __future__ import annotations

import datetime as dt
import os
import zlib
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue import usage
from catalogue.files import FILES
from catalogue.storage_elements import get_storage_element
from catalogue.writer_tokens import TRANSFER, writer_digest
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.transfers import fast_settings
from transfers import abandoned_uploads
from transfers.reaper import Reaper

DAY = 86400.0


def _sum(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


async def age(db: AsyncDatabase[Document], lfns: list[str], se: str, seconds: float) -> None:
    """Date the replicas of lfns on se as last heard of `seconds` ago (the clock moved on)."""
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    for doc in await db[FILES].find({"_id": {"$in": lfns}}).to_list():
        replicas = [{**r, "writer_at": then, "modified": then} if r["se"] == se else r for r in doc["replicas"]]
        await db[FILES].update_one({"_id": doc["_id"]}, {"$set": {"replicas": replicas}})


async def _register_copying(client: Client, se: str, lfns: list[str], data: bytes, writer: str | None) -> None:
    replica = {"se": se, "status": "copying", **({"writer": writer} if writer else {})}
    result = await client.register_files([{"lfn": lfn, "size": len(data), "adler32": _sum(data),
                                           "replicas": [replica]} for lfn in lfns])
    assert not result["failed"], result


async def _replicas(db: AsyncDatabase[Document], lfn: str) -> dict[str, str] | None:
    doc = await db[FILES].find_one({"_id": lfn})
    return None if doc is None else {r["se"]: r["status"] for r in doc["replicas"]}


async def test_only_uploads_silent_for_the_period_are_undone_with_their_bytes(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    se, other = await live_ses.add("file"), await live_ses.add("file")
    data = os.urandom(4096)
    async with api.client(api.token()) as alice:  # an ordinary account's uploads
        await _register_copying(alice, se.name, ["/cta/dead/a", "/cta/dead/b"], data, "d" * 32)
        await _register_copying(alice, se.name, ["/cta/live"], data, "l" * 32)
        await _register_copying(alice, se.name, ["/cta/by-hand"], data, None)
        await _register_copying(alice, other.name, ["/cta/kept"], data, None)
        assert not (await alice.set_replica_statuses([{"lfn": "/cta/kept", "se": other.name,
                                                       "status": "available"}]))["failed"]
        await _register_copying(alice, se.name, ["/cta/kept"], data, "d" * 32)  # an upload of a known file
    await _register_copying(admin, se.name, ["/cta/transfer"], data, None)
    assert not (await admin.hold_replicas("t" * 32, se.name, ["/cta/transfer"]))["failed"]
    await database[FILES].update_one({"_id": "/cta/transfer"}, {"$set": {"replicas.0.writer": TRANSFER}})
    stored = {lfn: live_ses.stored_file(se.name, lfn) for lfn in ("/cta/dead/a", "/cta/dead/b", "/cta/kept",
                                                                   "/cta/live", "/cta/by-hand", "/cta/transfer")}
    for path in stored.values():  # what each writer stored before it went quiet
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[:1000])
    await age(database, list(stored), se.name, 2 * DAY)
    await age(database, ["/cta/live"], se.name, 60)  # silent a minute: not a day
    before = await usage.rebuild(database, fix=False)
    assert before["drifted"] == 0, before

    ses = {name: await get_storage_element(database, name) for name in (se.name, other.name)}
    swept = await abandoned_uploads.sweep(database, ses, live_ses.credentials, DAY)

    assert (swept.undone, swept.records_removed, swept.failed, swept.more) == (3, 2, 0, False), swept
    assert await _replicas(database, "/cta/dead/a") is None and await _replicas(database, "/cta/dead/b") is None
    assert await _replicas(database, "/cta/kept") == {other.name: "available"}  # not founded by the dead upload
    for lfn in ("/cta/dead/a", "/cta/dead/b", "/cta/kept"):
        assert not stored[lfn].exists(), lfn  # on the storage itself
    for lfn in ("/cta/live", "/cta/by-hand", "/cta/transfer"):
        assert await _replicas(database, lfn) == {se.name: "copying"}, lfn
        assert stored[lfn].read_bytes() == data[:1000], lfn
    after = await usage.rebuild(database, fix=False)
    assert after["drifted"] == 0, after
    async with api.client(api.token()) as alice:  # the names are free again: uploaded afresh
        local = tmp_path / "again"
        local.write_bytes(data)
        [outcome] = await alice.upload([local], "/cta/dead/a", se.name)
        assert outcome.status == "uploaded", outcome


async def test_an_upload_heard_of_again_after_the_look_keeps_its_replica(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document],
) -> None:
    se = await live_ses.add("file")
    data = os.urandom(1024)
    await _register_copying(admin, se.name, ["/cta/back"], data, "b" * 32)
    stored = live_ses.stored_file(se.name, "/cta/back")
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(data)
    await age(database, ["/cta/back"], se.name, 2 * DAY)
    found, _ = await abandoned_uploads.find_abandoned(database, dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    assert list(found[(se.name, "copying")]) == ["/cta/back"]
    # The upload was only held up: it renews its lease before the reaper takes the replica.
    assert not (await admin.hold_replicas("b" * 32, se.name, ["/cta/back"], renew=True))["failed"]
    swept = abandoned_uploads.Swept()
    await abandoned_uploads._undo_on(database, await get_storage_element(database, se.name), "copying",
                                     found[(se.name, "copying")], {}, swept)
    assert (swept.undone, swept.left) == (0, 1), swept
    doc = await database[FILES].find_one({"_id": "/cta/back"})
    assert doc is not None and doc["replicas"][0]["writer"] == writer_digest("b" * 32)
    assert stored.read_bytes() == data


async def test_the_reaper_looks_for_abandoned_uploads_unless_switched_off(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], settings: Settings,
) -> None:
    se = await live_ses.add("file")
    await _register_copying(admin, se.name, ["/cta/off", "/cta/on"], b"x", "o" * 32)
    await age(database, ["/cta/off", "/cta/on"], se.name, 2 * DAY)
    off = Reaper(fast_settings(settings, abandoned_upload_s=0), database)
    await off.run_once()
    assert await _replicas(database, "/cta/off") == {se.name: "copying"}
    on = Reaper(fast_settings(settings, abandoned_upload_s=DAY), database)
    assert await on.run_once() == 2
    assert await _replicas(database, "/cta/off") is None and await _replicas(database, "/cta/on") is None


async def test_a_look_that_stopped_at_its_batch_goes_on_at_the_next_cycle(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(abandoned_uploads, "BATCH", 2)
    se = await live_ses.add("file")
    lfns = [f"/cta/many/f{i}" for i in range(5)]
    await _register_copying(admin, se.name, lfns, b"x", "m" * 32)
    await age(database, lfns, se.name, 2 * DAY)
    reaper = Reaper(fast_settings(settings, abandoned_upload_s=DAY), database)
    assert [await reaper.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert await database[FILES].count_documents({"_id": {"$in": lfns}}) == 0


async def test_an_undo_cut_short_after_its_claim_is_finished_and_no_other_unavailable_replica(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], settings: Settings,
) -> None:
    se = await live_ses.add("file")
    data = os.urandom(2048)
    writer = "u" * 32
    lfns = ["/cta/undo/cut", "/cta/undo/operator", "/cta/undo/again"]
    async with api.client(api.token()) as alice:
        await _register_copying(alice, se.name, lfns, data, writer)
        # What an upload's undo sends before it removes the replica (`dataio.upload_undo._claim`); its
        # process is killed right after, leaving the replica `unavailable`, its bytes maybe still there.
        claimed = await alice.set_replica_statuses([{"lfn": lfn, "se": se.name, "status": "unavailable",
                                                     "expected": "copying", "writer": writer} for lfn in lfns])
        assert not claimed["failed"], claimed
    await admin.set_replica_statuses([{"lfn": "/cta/undo/operator", "se": se.name, "status": "bad"}])
    await admin.set_replica_statuses([{"lfn": "/cta/undo/operator", "se": se.name, "status": "unavailable"}])
    stored = {lfn: live_ses.stored_file(se.name, lfn) for lfn in lfns}
    for path in stored.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    await age(database, lfns, se.name, 2 * DAY)
    await age(database, ["/cta/undo/again"], se.name, 60)  # its writer was heard of a minute ago
    reaper = Reaper(fast_settings(settings, abandoned_upload_s=DAY), database)
    assert await reaper.run_once() == 1
    assert await _replicas(database, "/cta/undo/cut") is None and not stored["/cta/undo/cut"].exists()
    # An operator's `unavailable` (the undo's mark went with its status change) and an undo whose
    # writer is not yet silent for the period keep their replicas and bytes.
    for lfn in ("/cta/undo/operator", "/cta/undo/again"):
        assert await _replicas(database, lfn) == {se.name: "unavailable"}, lfn
        assert stored[lfn].read_bytes() == data, lfn
    assert (await usage.rebuild(database, fix=False))["drifted"] == 0


async def test_a_killed_reaper_passs_holds_are_taken_after_the_lease_not_another_period(
    api: RunningApi, live_ses: LiveSEs, admin: Client, database: AsyncDatabase[Document], settings: Settings,
) -> None:
    se = await live_ses.add("file")
    await _register_copying(admin, se.name, ["/cta/reaped/dead", "/cta/reaped/live"], b"x", "k" * 32)
    # A pass held both (its token on them) and was killed before it undid them.
    for lfn in ("/cta/reaped/dead", "/cta/reaped/live"):
        await database[FILES].update_one({"_id": lfn}, {"$set": {"replicas.0.writer": "reaper-" + "0" * 32}})
    await age(database, ["/cta/reaped/dead"], se.name, 60)  # its holds silent for twice the lease
    await age(database, ["/cta/reaped/live"], se.name, 5)  # renewed 5 s ago: a live pass's
    reaper = Reaper(fast_settings(settings, abandoned_upload_s=DAY), database)
    assert await reaper.run_once() == 1
    assert await _replicas(database, "/cta/reaped/dead") is None
    assert await _replicas(database, "/cta/reaped/live") == {se.name: "copying"}
