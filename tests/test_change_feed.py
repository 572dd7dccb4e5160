"""The catalogue's change feed: one event per change, in sequence; consumers keep a persisted
position under a lease, see every event at least once (also after being killed), never skip
an event that a slow writer inserts late; events every consumer passed are trimmed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import change_feed
from catalogue.dataset_contents import attach_files, detach_files
from catalogue.datasets import DidIn, create_did
from catalogue.files import register_files, remove_files
from catalogue.metadata import set_metadata
from catalogue.moves import move
from catalogue.namespace import remove
from catalogue.replicas import add_replicas, remove_replicas, set_replica_status
from kernel.db import Document
from kernel.errors import InvalidInput
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN, CommandCounter
from tests.test_cli_catalogue import cairn

ROOT = Path(__file__).resolve().parent.parent


async def last_seq(db: AsyncDatabase[Document]) -> int:
    events = await change_feed.read(db, 0, 100_000)
    return events[-1]["_id"] if events else 0


async def collect(db: AsyncDatabase[Document], name: str, worker: str = "w", **kw: float) -> list[change_feed.Event]:
    seen: list[change_feed.Event] = []

    async def handler(events: list[change_feed.Event]) -> None:
        seen.extend(events)

    await change_feed.consume(db, name, worker, handler, lease_s=kw.get("lease_s", 5.0))
    return seen


async def test_each_kind_of_catalogue_change_appends_its_event_in_order(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    start = await last_seq(db)
    await register_files(db, ADMIN, [{"lfn": "/vo/feed/f", "size": 5, "adler32": "00000001",
                                      "replicas": [{"se": "CERN-DISK"}]}])
    await add_replicas(db, [{"lfn": "/vo/feed/f", "se": "DESY-DISK"}])
    assert await set_replica_status(db, "/vo/feed/f", "DESY-DISK", "bad")
    await remove_replicas(db, [{"lfn": "/vo/feed/f", "se": "DESY-DISK"}])
    await create_did(db, ADMIN, DidIn(did="vo:feed"))
    await attach_files(db, ADMIN, "vo:feed", ["/vo/feed/f"])
    await detach_files(db, ADMIN, "vo:feed", ["/vo/feed/f"])
    await set_metadata(db, ADMIN, "/vo/feed/f", {"run": 7})
    await remove_files(db, ADMIN, ["/vo/feed/f"], force=True)
    events = await change_feed.read(db, start, 100)
    assert [(e["kind"], e["did"]) for e in events] == [
        ("file_registered", "/vo/feed/f"), ("replica_added", "/vo/feed/f"), ("replica_status", "/vo/feed/f"),
        ("replica_removed", "/vo/feed/f"), ("did_created", "vo:feed"), ("attached", "vo:feed"),
        ("detached", "vo:feed"), ("metadata_changed", "/vo/feed/f"), ("file_removed", "/vo/feed/f")]
    assert [e["_id"] for e in events] == list(range(start + 1, start + 10))
    assert events[1]["data"] == {"se": "DESY-DISK"} and events[2]["data"] == {"se": "DESY-DISK", "status": "bad"}
    assert events[5]["data"] == {"member": "/vo/feed/f"} and events[7]["data"] == {"keys": ["run"]}


async def test_moving_and_removing_a_tree_append_the_files_events(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await register_files(db, ADMIN, [{"lfn": f"/vo/tree/d/f{i}", "size": 1, "adler32": "00000001"} for i in range(3)])
    start = await last_seq(db)
    await move(db, ADMIN, "/vo/tree/d", "/vo/tree/e")
    moved = await change_feed.read(db, start, 100)
    assert sorted((e["kind"], e["did"]) for e in moved) == sorted(
        [("file_removed", f"/vo/tree/d/f{i}") for i in range(3)]
        + [("file_registered", f"/vo/tree/e/f{i}") for i in range(3)])
    start = await last_seq(db)
    await remove(db, ADMIN, "/vo/tree", recursive=True)
    assert sorted(e["did"] for e in await change_feed.read(db, start, 100)
                  if e["kind"] == "file_removed") == [f"/vo/tree/e/f{i}" for i in range(3)]


async def test_a_batch_of_changes_appends_its_events_in_one_block(catalogue_db: AsyncDatabase[Document]) -> None:
    start = await last_seq(catalogue_db)
    await register_files(catalogue_db, ADMIN, [{"lfn": f"/vo/many/f{i}", "size": 1, "adler32": "00000001"}
                                               for i in range(300)])
    events = await change_feed.read(catalogue_db, start, 1000)
    assert [e["_id"] for e in events] == list(range(start + 1, start + 301))
    assert len({e["at"] for e in events}) == 1  # one insert


async def test_a_big_append_is_stored_as_blocks_and_read_back_as_events_in_order(
    database: AsyncDatabase[Document],
) -> None:
    await change_feed.append(database, [change_feed.event("file_registered", f"/b{i}") for i in range(2500)])
    blocks = await database[change_feed.EVENTS].find({}).sort("_id", 1).to_list()
    assert [(b["_id"], b["last"], len(json.loads(b["events"]))) for b in blocks] == [
        (change_feed.key(1), 1000, 1000), (change_feed.key(1001), 2000, 1000), (change_feed.key(2001), 2500, 500)]
    everything = await change_feed.read(database, 0, 10_000)
    assert [(e["_id"], e["did"]) for e in everything] == [(i + 1, f"/b{i}") for i in range(2500)]
    middle = await change_feed.read(database, 1500, 700)  # starts inside a block, ends inside another
    assert [e["_id"] for e in middle] == list(range(1501, 2201))


async def test_a_consumer_takes_whole_blocks_and_saves_its_position_at_their_ends(
    database: AsyncDatabase[Document],
) -> None:
    for size in (300, 400, 500, 5):
        await change_feed.append(database, [change_feed.event("file_registered", f"/s{size}-{i}") for i in range(size)])
    batches: list[list[int]] = []
    saved: list[int] = []

    async def handler(events: list[change_feed.Event]) -> None:
        batches.append([e["_id"] for e in events])
        saved.append(await change_feed.position(database, "blocks"))

    await change_feed.consume(database, "blocks", "w", handler, lease_s=5, batch=800)
    assert [(b[0], b[-1]) for b in batches] == [(1, 700), (701, 1205)]  # 300+400, then 500+5: block ends
    assert saved == [0, 700]
    assert await change_feed.position(database, "blocks") == 1205
    # a block bigger than the batch is split, and the consumer goes on inside it
    await change_feed.append(database, [change_feed.event("file_removed", f"/big{i}") for i in range(30)])
    batches.clear()
    await change_feed.consume(database, "blocks", "w", handler, lease_s=5, batch=20)
    assert [(b[0], b[-1]) for b in batches] == [(1206, 1225), (1226, 1235)]


async def test_one_event_per_call_blocks_are_read_in_few_queries(
    database: AsyncDatabase[Document], mongodb_uri: str,
) -> None:
    for i in range(60):
        await change_feed.append(database, [change_feed.event("did_created", f"vo:d{i}")])
    counter = CommandCounter()
    reader: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[counter], tz_aware=True)
    try:
        events = await change_feed.read(reader[database.name], 0, 1000)
    finally:
        await reader.close()
    assert [e["did"] for e in events] == [f"vo:d{i}" for i in range(60)]
    assert counter.commands.count("find") <= 2


async def test_reads_go_on_past_a_hole_longer_than_a_read_and_never_load_more_than_a_block_extra(
    database: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch,
) -> None:
    await change_feed.append(database, [change_feed.event("did_created", "vo:first")])
    await database[change_feed.SEQUENCE].update_one({"_id": change_feed.EVENTS}, {"$inc": {"n": 5000}})  # died
    await change_feed.append(database, [change_feed.event("did_created", f"vo:d{i}") for i in range(2500)])
    assert [e["_id"] for e in await change_feed.read(database, 1, 3)] == [5002, 5003, 5004]
    monkeypatch.setattr(change_feed, "SETTLE_S", 0.0)
    seen: list[list[int]] = []

    async def handler(events: list[change_feed.Event]) -> None:
        seen.append([e["_id"] for e in events])

    await change_feed.consume(database, "late", "w", handler, lease_s=5, batch=1500)
    assert [(b[0], b[-1], len(b)) for b in seen] == [(1, 6001, 1001), (6002, 7501, 1500)]  # whole blocks


async def test_events_stored_one_per_document_before_blocks_are_still_read_and_trimmed(
    database: AsyncDatabase[Document],
) -> None:
    at = change_feed._now()
    await database[change_feed.EVENTS].insert_many([
        *({"_id": change_feed.key(i), "kind": "file_registered", "did": f"/old{i}", "at": at} for i in (1, 2)),
        # a block whose events are a list of documents (the layout before they became one text)
        {"_id": change_feed.key(3), "last": 4, "at": at, "events": [
            {"kind": "file_registered", "did": "/list3"},
            {"kind": "replica_added", "did": "/list3", "data": {"se": "A"}}]},
    ])
    await database[change_feed.SEQUENCE].update_one({"_id": change_feed.EVENTS}, {"$set": {"n": 4}}, upsert=True)
    await change_feed.append(database, [change_feed.event("file_removed", "/old1")])
    assert [(e["_id"], e["did"]) for e in await collect(database, "upgraded")] == [
        (1, "/old1"), (2, "/old2"), (3, "/list3"), (4, "/list3"), (5, "/old1")]
    assert await change_feed.trim(database, keep_s=0) == 5
    assert await change_feed.read(database, 0, 10) == []


async def test_a_consumer_resumes_from_its_saved_position(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await register_files(db, ADMIN, [{"lfn": f"/vo/pos/f{i}", "size": 1, "adler32": "00000001"} for i in range(3)])
    first = await collect(db, "reader")
    assert [e["did"] for e in first][-3:] == ["/vo/pos/f0", "/vo/pos/f1", "/vo/pos/f2"]
    assert await collect(db, "reader") == []
    await remove_files(db, ADMIN, ["/vo/pos/f1"])
    again = await collect(db, "reader", worker="another process")
    assert [(e["kind"], e["did"]) for e in again] == [("file_removed", "/vo/pos/f1")]
    assert {c["name"]: c["position"] for c in await change_feed.consumers(db)}["reader"] == again[-1]["_id"]


async def test_a_consumer_killed_while_handling_sees_those_events_again_after_its_lease(
    catalogue_db: AsyncDatabase[Document], settings: Settings,
) -> None:
    db = catalogue_db
    await register_files(db, ADMIN, [{"lfn": f"/vo/kill/f{i}", "size": 1, "adler32": "00000001"} for i in range(5)])
    script = (
        "import asyncio\n"
        "from catalogue import change_feed\n"
        "from kernel.db import get_database\n"
        "from kernel.settings import load_settings\n"
        "async def main():\n"
        "    db = get_database(load_settings())\n"
        "    async def handler(events):\n"
        "        print(' '.join(str(e['_id']) for e in events), flush=True)\n"
        "        await asyncio.sleep(3600)\n"
        "    await change_feed.consume(db, 'killed', 'victim', handler, lease_s=2)\n"
        "asyncio.run(main())\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_MONGODB_URI": str(settings.mongodb_uri),
           "CAIRN_DATABASE": settings.database}
    victim = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env,
                                                  stdout=asyncio.subprocess.PIPE)
    assert victim.stdout is not None
    handed = [int(s) for s in (await asyncio.wait_for(victim.stdout.readline(), 60)).split()]
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    assert len(handed) >= 5
    assert await collect(db, "killed", worker="survivor", lease_s=2) == []  # the victim's lease still holds
    await asyncio.sleep(2.2)
    resumed = await collect(db, "killed", worker="survivor", lease_s=2)
    assert [e["_id"] for e in resumed] == handed


async def test_a_hole_left_by_a_slow_writer_is_waited_for_not_skipped(database: AsyncDatabase[Document]) -> None:
    await change_feed.append(database, [change_feed.event("file_registered", "/a")])
    assert [e["did"] for e in await collect(database, "patient")] == ["/a"]
    # A writer allocated seq 2 and has not inserted it yet; a later writer's seq 3 is in.
    await database[change_feed.SEQUENCE].update_one({"_id": change_feed.EVENTS}, {"$inc": {"n": 1}})
    await change_feed.append(database, [change_feed.event("file_registered", "/c")])
    assert await collect(database, "patient") == []
    await database[change_feed.EVENTS].insert_one(
        change_feed.stored_block(2, [change_feed.event("file_registered", "/b")], change_feed._now()))
    assert [e["did"] for e in await collect(database, "patient")] == ["/b", "/c"]


async def test_a_hole_older_than_the_settling_time_is_passed(
    database: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch,
) -> None:
    await database[change_feed.SEQUENCE].update_one({"_id": change_feed.EVENTS}, {"$inc": {"n": 1}}, upsert=True)
    await change_feed.append(database, [change_feed.event("file_registered", "/after-a-dead-writer")])
    assert await collect(database, "mover") == []
    monkeypatch.setattr(change_feed, "SETTLE_S", 0.0)
    await asyncio.sleep(0.01)
    assert [e["did"] for e in await collect(database, "mover")] == ["/after-a-dead-writer"]


async def test_trimming_keeps_what_a_registered_consumer_has_not_passed(database: AsyncDatabase[Document]) -> None:
    await change_feed.append(database, [change_feed.event("file_registered", f"/t{i}") for i in range(4)])
    assert len(await collect(database, "fast")) == 4
    await change_feed.position(database, "slow")  # registered at the start, has read nothing
    assert await change_feed.trim(database, keep_s=0) == 0
    assert len(await change_feed.read(database, 0, 10)) == 4
    await change_feed.unregister(database, "slow")
    assert await change_feed.trim(database, keep_s=3600) == 0  # passed, but not old enough
    assert await change_feed.trim(database, keep_s=0) == 4
    assert await change_feed.read(database, 0, 10) == []
    await change_feed.append(database, [change_feed.event("file_removed", "/t0")])
    assert [e["_id"] for e in await collect(database, "fast")] == [5]  # sequence numbers go on


async def test_trimming_keeps_a_block_a_consumer_is_inside_of(database: AsyncDatabase[Document]) -> None:
    await change_feed.append(database, [change_feed.event("file_registered", f"/p{i}") for i in range(2)])
    await change_feed.append(database, [change_feed.event("file_registered", f"/q{i}") for i in range(3)])

    async def nothing(events: list[change_feed.Event]) -> None:
        """A consumer that only moves its position on."""

    await change_feed.consume(database, "inside", "w", nothing, lease_s=5, batch=2, max_batches=1)  # block 1..2
    await change_feed.consume(database, "inside", "w", nothing, lease_s=5, batch=2, max_batches=1)  # 3..4 of 3..5
    assert await change_feed.position(database, "inside") == 4
    assert await change_feed.trim(database, keep_s=0) == 2
    assert [e["did"] for e in await change_feed.read(database, 0, 10)] == ["/q0", "/q1", "/q2"]
    assert [e["did"] for e in await collect(database, "inside")] == ["/q2"]
    assert await change_feed.trim(database, keep_s=0) == 3


async def test_the_feed_is_read_through_the_api_and_the_cli_by_admins_only(
    api: RunningApi, catalogue_db: AsyncDatabase[Document],
) -> None:
    await register_files(catalogue_db, ADMIN, [{"lfn": "/vo/cli/f", "size": 1, "adler32": "00000001"}])
    start = (await api.client().change_feed(after=0, limit=10_000))["events"][-1]["seq"] - 1
    shown = await cairn(api, "feed", "--after", str(start), "--json")
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    assert [(e["kind"], e["did"]) for e in answer["events"]] == [("file_registered", "/vo/cli/f")]
    assert isinstance(answer["consumers"], list)
    refused = await cairn(api, "feed", "--json", token=api.token())
    assert refused.returncode != 0 and "admin" in (refused.stderr + refused.stdout).lower()
    with pytest.raises(InvalidInput):
        await api.client().change_feed(after=-1)
