"""A file or directory is moved by one call however many ask at once (a client retrying a `cairn
mv` that timed out, two users): the others are refused (409), the file stays at one LFN with its
GUID, and the usage counters count the move once. A replica added while a move is under way goes
with the file."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pymongo
import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.directory_moves import BELOW_A_MOVE
from catalogue.file_removal import COUNTED_FIELDS, claim_removals, delete_claimed
from catalogue.files import register_files, remove_files
from catalogue.moves import move
from catalogue.namespace import mkdir
from catalogue.replicas import add_replicas
from catalogue.usage import directory_usage, rebuild, record_files
from kernel.db import Document
from kernel.errors import Conflict, NotFound
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN, storage_elements
from tests.fixtures.cli import run_cli
from transfers.destination import register_copying

CALLS = 4


async def registered(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    files = [{"lfn": lfn, "size": 100, "adler32": "00000001", "replicas": [{"se": "CERN-DISK"}]} for lfn in lfns]
    assert not (await register_files(db, ADMIN, files))["failed"]


async def lfns_and_guids(db: AsyncDatabase[Document]) -> dict[str, str]:
    return {doc["_id"]: doc["guid"] for doc in await db["files"].find({}, {"guid": 1}).to_list()}


async def assert_exact(db: AsyncDatabase[Document]) -> None:
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]


def outcomes(results: list[Any]) -> list[str]:
    """Each call's answer: moved, or refused (409 while another holds it, 404 once it moved away)."""
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Conflict | NotFound):
            raise result
    return sorted("moved" if isinstance(r, dict) else "refused" for r in results)


async def test_moves_of_one_file_to_two_places_at_once_leave_it_at_one(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await registered(db, ["/vo/m/a/f"])
    await mkdir(db, ADMIN, "/vo/m/b")
    await mkdir(db, ADMIN, "/vo/m/c")
    [guid] = (await lfns_and_guids(db)).values()
    results = await asyncio.gather(move(db, ADMIN, "/vo/m/a/f", "/vo/m/b/f"), move(db, ADMIN, "/vo/m/a/f", "/vo/m/c/f"),
                                   return_exceptions=True)
    assert outcomes(results) == ["moved", "refused"]
    placed = await lfns_and_guids(db)
    assert list(placed.values()) == [guid] and list(placed) in (["/vo/m/b/f"], ["/vo/m/c/f"])
    await assert_exact(db)


async def test_a_move_asked_again_at_once_counts_it_once(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    await registered(db, ["/vo/m/a/f", "/vo/m/a/g"])
    await mkdir(db, ADMIN, "/vo/m/b")
    results = await asyncio.gather(*(move(db, ADMIN, "/vo/m/a/f", "/vo/m/b/f") for _ in range(CALLS)),
                                   return_exceptions=True)
    assert outcomes(results) == ["moved"] + ["refused"] * (CALLS - 1)
    assert sorted(await lfns_and_guids(db)) == ["/vo/m/a/g", "/vo/m/b/f"]
    assert [(await directory_usage(db, d))["files"] for d in ("/vo/m/a", "/vo/m/b")] == [1, 1]
    await assert_exact(db)


async def test_moves_of_one_directory_to_several_places_at_once_move_it_once(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    await registered(db, [f"/vo/m/tree/d{d}/f{i}" for d in range(3) for i in range(20)])
    results = await asyncio.gather(*(move(db, ADMIN, "/vo/m/tree", f"/vo/m/to{k}") for k in range(CALLS)),
                                   return_exceptions=True)
    assert outcomes(results) == ["moved"] + ["refused"] * (CALLS - 1)
    parents = {lfn.split("/")[3] for lfn in await lfns_and_guids(db)}
    assert len(parents) == 1 and len(await lfns_and_guids(db)) == 60
    assert (await directory_usage(db, "/vo/m"))["files"] == 60
    await assert_exact(db)


class ReplicaAddedAfterCopy(monitoring.CommandListener):
    """Adds a replica to `source` (as another call would, bumping its version) the moment the
    database has answered the move's first insert on `files`: between its copy and its delete."""

    def __init__(self, uri: str, database: str, source: str) -> None:
        self.writer: pymongo.MongoClient[Document] = pymongo.MongoClient(uri)
        self.database, self.source, self.done = database, source, False
        self.request: int | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.request is None and event.command_name == "insert" and event.command.get("insert") == "files":
            self.request = event.request_id

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if not self.done and event.request_id == self.request:
            self.done = True
            self.writer[self.database]["files"].update_one(
                {"_id": self.source}, {"$push": {"replicas": {"se": "DESY-DISK", "status": "available"}},
                                       "$inc": {"version": 1}})

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to do for a command that failed (the listener interface asks for this method)."""


async def test_a_replica_added_while_the_file_moves_goes_with_it(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str,
) -> None:
    await registered(catalogue_db, ["/vo/m/a/f"])
    listener = ReplicaAddedAfterCopy(mongodb_uri, settings.database, "/vo/m/a/f")
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[listener], tz_aware=True)
    try:
        moved = await move(client[settings.database], ADMIN, "/vo/m/a/f", "/vo/m/b")
    finally:
        await client.close()
        listener.writer.close()
    assert listener.done
    assert [r["se"] for r in moved["replicas"]] == ["CERN-DISK", "DESY-DISK"]
    [record] = await catalogue_db["files"].find({}).to_list()
    assert record["_id"] == "/vo/m/b" and [r["se"] for r in record["replicas"]] == ["CERN-DISK", "DESY-DISK"]


async def test_cairn_mv_run_several_times_at_once_moves_the_file_once(api: RunningApi) -> None:
    async with api.client() as admin:
        await admin.register_files([{"lfn": "/vo/cli/a/f", "size": 5, "adler32": "00000001"}])
        await admin.mkdir("/vo/cli/b", parents=True)
    runs = await asyncio.gather(*(run_cli(api.url, api.admin_token, "mv", "/vo/cli/a/f", "/vo/cli/b/f")
                                  for _ in range(CALLS)))
    refused = [done for done in runs if done.returncode]
    assert len(refused) == CALLS - 1, [d.stderr for d in runs]
    assert all("conflict" in done.stderr or "not_found" in done.stderr for done in refused), [d.stderr for d in refused]
    async with api.client() as admin:
        assert (await admin.rebuild_usage(fix=False))["drifted"] == 0
        assert (await admin.stat("/vo/cli/b/f"))["path"] == "/vo/cli/b/f"
        with pytest.raises(NotFound):
            await admin.stat("/vo/cli/a/f")


async def test_a_directory_move_waits_for_a_removal_under_way_below_it_and_refuses_if_it_stays(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    await registered(db, ["/vo/m/d/f", "/vo/m/d/g"])
    claim = await claim_removals(db, ["/vo/m/d/f"], COUNTED_FIELDS, force=True)  # a removal under way
    with pytest.raises(Conflict, match="being moved or removed"):
        await move(db, ADMIN, "/vo/m/d", "/vo/m/e")
    assert sorted(await lfns_and_guids(db)) == ["/vo/m/d/f", "/vo/m/d/g"]
    await record_files(db, (await delete_claimed(db, claim)).values(), -1)  # the removal ends
    await move(db, ADMIN, "/vo/m/d", "/vo/m/e")
    assert sorted(await lfns_and_guids(db)) == ["/vo/m/e/g"]
    await assert_exact(db)


class CallWhileDirectoryMoves(monitoring.CommandListener):
    """Runs `call` (in a thread of its own, with its own client) the moment the database has
    answered the directory move's first `command` on `collection`: by default its mark, before it
    copies anything; ("insert", "files"): its copy of the first files, half-way."""

    def __init__(self, uri: str, database: str, call: Callable[[AsyncDatabase[Document]], Awaitable[dict[str, Any]]],
                 command: str = "update", collection: str = "directories") -> None:
        self.uri, self.database, self.call = uri, database, call
        self.command, self.collection = command, collection
        self.request: int | None = None
        self.answer: dict[str, Any] | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.request is None and event.command_name == self.command \
                and event.command.get(self.command) == self.collection:
            self.request = event.request_id

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.answer is None and event.request_id == self.request:
            thread = threading.Thread(target=lambda: asyncio.run(self._run()))
            thread.start()
            thread.join()

    async def _run(self) -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(self.uri, tz_aware=True)
        try:
            self.answer = await self.call(client[self.database])
        finally:
            await client.close()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to do for a command that failed (the listener interface asks for this method)."""


async def moved_with(uri: str, database: str, listener: CallWhileDirectoryMoves, source: str, destination: str) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, event_listeners=[listener], tz_aware=True)
    try:
        await move(client[database], ADMIN, source, destination)
    finally:
        await client.close()
    assert listener.answer is not None


async def test_a_removal_below_a_directory_being_moved_is_refused_and_the_move_completes(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str,
) -> None:
    await registered(catalogue_db, ["/vo/m/d/f", "/vo/m/d/g"])
    listener = CallWhileDirectoryMoves(mongodb_uri, settings.database,
                                       lambda db: remove_files(db, ADMIN, ["/vo/m/d/f"], force=True))
    await moved_with(mongodb_uri, settings.database, listener, "/vo/m/d", "/vo/m/e")
    assert (listener.answer or {})["failed"] == {"/vo/m/d/f": BELOW_A_MOVE}
    assert sorted(await lfns_and_guids(catalogue_db)) == ["/vo/m/e/f", "/vo/m/e/g"]
    await assert_exact(catalogue_db)


@pytest.mark.parametrize("when", ["update directories", "insert files"])
async def test_a_file_registered_below_a_directory_being_moved_is_refused_and_left_nowhere(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str, when: str,
) -> None:
    await registered(catalogue_db, ["/vo/m/d/f"])
    new = [{"lfn": "/vo/m/d/sub/new", "size": 7, "adler32": "00000001", "replicas": [{"se": "CERN-DISK"}]}]
    command, collection = when.split()
    listener = CallWhileDirectoryMoves(mongodb_uri, settings.database, lambda db: register_files(db, ADMIN, new),
                                       command, collection)
    await moved_with(mongodb_uri, settings.database, listener, "/vo/m/d", "/vo/m/e")
    assert (listener.answer or {})["failed"] == {"/vo/m/d/sub/new": BELOW_A_MOVE}
    assert sorted(await lfns_and_guids(catalogue_db)) == ["/vo/m/e/f"]
    left = await catalogue_db["directories"].find({"_id": {"$regex": "^/vo/m/d(/|$)"}}, {"_id": 1}).to_list()
    assert left == []  # nothing left at the old place
    await assert_exact(catalogue_db)


async def test_a_replica_added_while_its_directory_moves_goes_with_the_file(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str,
) -> None:
    await registered(catalogue_db, ["/vo/m/d/f", "/vo/m/d/g"])
    listener = ReplicaAddedAfterCopy(mongodb_uri, settings.database, "/vo/m/d/f")
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, event_listeners=[listener], tz_aware=True)
    try:
        await move(client[settings.database], ADMIN, "/vo/m/d", "/vo/m/e")
    finally:
        await client.close()
        listener.writer.close()
    assert listener.done
    records = {doc["_id"]: [r["se"] for r in doc["replicas"]] for doc in await catalogue_db["files"].find({}).to_list()}
    assert records == {"/vo/m/e/f": ["CERN-DISK", "DESY-DISK"], "/vo/m/e/g": ["CERN-DISK"]}


@pytest.mark.parametrize("when", ["update directories", "insert files"])
async def test_a_replica_being_written_below_a_directory_being_moved_is_refused(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str, when: str,
) -> None:
    """A `copying` replica (a transfer's or an upload's) is finished by its writer at the LFN it was
    registered under: carried along by the move, it was left `copying` at the new LFN for good."""
    await registered(catalogue_db, ["/vo/m/d/f", "/vo/m/d/g"])
    command, collection = when.split()
    writing = [{"lfn": "/vo/m/d/f", "se": "DESY-DISK", "status": "copying"}]
    listener = CallWhileDirectoryMoves(mongodb_uri, settings.database, lambda db: add_replicas(db, writing),
                                       command, collection)
    await moved_with(mongodb_uri, settings.database, listener, "/vo/m/d", "/vo/m/e")
    assert (listener.answer or {})["failed"] == {"/vo/m/d/f": f"replica on SE DESY-DISK not added: {BELOW_A_MOVE}"}
    records = {doc["_id"]: [(r["se"], r["status"]) for r in doc["replicas"]]
               for doc in await catalogue_db["files"].find({}).to_list()}
    assert records == {"/vo/m/e/f": [("CERN-DISK", "available")], "/vo/m/e/g": [("CERN-DISK", "available")]}
    await assert_exact(catalogue_db)



class MoveAroundAPush(monitoring.CommandListener):
    """Listens to a writer's client: just before its write (`trigger`: a push of a replica, by
    default; a registration's insert) is sent, a directory move starts (a thread with a client of
    its own) and runs until it has looked for replicas being written (its read of
    `dataset_files`, the look's last); the write then lands, and the move goes on before the
    writer's next command: to its end (`until` "end"), or until it has copied the files (`until`
    "copied": their originals still there), where it waits for the writer's next update of a
    file to land, or its call to end (`writer_done`)."""

    def __init__(self, uri: str, database: str, source: str, destination: str, until: str,
                 trigger: str = "update") -> None:
        self.uri, self.database, self.source, self.destination = uri, database, source, destination
        self.until, self.trigger = until, trigger
        self.release: int | None = None
        self.looked, self.pushed, self.ended = threading.Event(), threading.Event(), threading.Event()
        self.writer_done = threading.Event()
        self.push: int | None = None
        self.copy: int | None = None
        self.held_at_copy = False
        self.moved: dict[str, Any] | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) != "files":
            return
        if self.push is None and event.command_name == self.trigger:
            self.push = event.request_id
            threading.Thread(target=lambda: asyncio.run(self._move())).start()
            assert self.looked.wait(30)
        elif self.push is not None and self.release is None and event.command_name == "update":
            self.release = event.request_id

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id == self.push:
            self.pushed.set()
            assert self.ended.wait(30)
        elif event.request_id == self.release:
            self.writer_done.set()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to do for a command that failed (the listener interface asks for this method)."""

    def move_started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.until == "copied" and self.pushed.is_set() and event.command_name == "insert" \
                and event.command.get("insert") == "files":
            self.copy = event.request_id

    def move_succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if not self.looked.is_set() and event.command_name == "find" \
                and event.reply.get("cursor", {}).get("ns", "").endswith(".dataset_files"):
            self.looked.set()
            assert self.pushed.wait(30)
        elif event.request_id == self.copy and not self.ended.is_set():
            self.held_at_copy = True
            self.ended.set()
            assert self.writer_done.wait(30)

    async def _move(self) -> None:
        mover = self

        class Mover(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                mover.move_started(event)

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                mover.move_succeeded(event)

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                """Nothing to do for a command that failed."""

        client: AsyncMongoClient[Document] = AsyncMongoClient(self.uri, event_listeners=[Mover()], tz_aware=True)
        try:
            self.moved = await move(client[self.database], ADMIN, self.source, self.destination)
        finally:
            self.looked.set()
            self.ended.set()
            await client.close()

    async def around(self, call: Callable[[AsyncDatabase[Document]], Awaitable[Any]]) -> Any:
        """The writer's `call` on a client of its own that this listens to; returns once the move
        (in its thread) has ended too, checking that it ran around the write as asked."""
        client: AsyncMongoClient[Document] = AsyncMongoClient(self.uri, event_listeners=[self], tz_aware=True)
        try:
            return await call(client[self.database])
        finally:
            self.writer_done.set()
            await client.close()
            for _ in range(300):  # the move, in its thread, may still be ending
                if self.moved is not None:
                    break
                await asyncio.sleep(0.05)
            assert self.moved is not None and self.moved["path"] == self.destination
            assert self.held_at_copy == (self.until == "copied")


@pytest.mark.parametrize("until", ["end", "copied"])
async def test_a_replica_being_written_that_a_directory_move_carried_away_is_taken_back(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str, until: str,
) -> None:
    """A writer pushes its `copying` replica just after a directory move looked for writers (and
    found none); the move then copies the file with it, and ends (or has only copied it) before
    the writer looks for moves. The writer finds the directory gone (or marked) and takes its
    replica back off the file where it now is (by its GUID), counted off its SE once (a move
    that copied the file meanwhile copies it again without the replica): before, it stayed
    `copying` at the new LFN for good, and the writer went on to write it by the old one."""
    await registered(catalogue_db, ["/vo/m/d/f", "/vo/m/d/g"])
    guids = await lfns_and_guids(catalogue_db)
    listener = MoveAroundAPush(mongodb_uri, settings.database, "/vo/m/d", "/vo/m/e", until)
    answer = await listener.around(lambda db: add_replicas(db, [{"lfn": "/vo/m/d/f", "se": "DESY-DISK",
                                                                 "status": "copying"}]))
    assert answer == {"successful": {}, "failed": {"/vo/m/d/f": f"replica on SE DESY-DISK not added: {BELOW_A_MOVE}"}}
    records = {doc["_id"]: (doc["guid"], [(r["se"], r["status"]) for r in doc["replicas"]])
               for doc in await catalogue_db["files"].find({}).to_list()}
    assert records == {"/vo/m/e/f": (guids["/vo/m/d/f"], [("CERN-DISK", "available")]),
                       "/vo/m/e/g": (guids["/vo/m/d/g"], [("CERN-DISK", "available")])}
    await assert_exact(catalogue_db)


async def test_a_lost_replica_set_copying_again_that_a_directory_move_carried_away_is_set_back(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str,
) -> None:
    """A transfer to an SE where the file's replica was marked lost sets that replica `copying`
    again (no push): the same look after the write, and the replica set back to `lost` where the
    file now is, the transfer refused to be tried again."""
    await registered(catalogue_db, ["/vo/m/d/f", "/vo/m/d/g"])
    assert not (await add_replicas(catalogue_db, [{"lfn": "/vo/m/d/f", "se": "DESY-DISK", "status": "lost"}]))["failed"]
    desy = next(se for se in storage_elements() if se.name == "DESY-DISK")
    listener = MoveAroundAPush(mongodb_uri, settings.database, "/vo/m/d", "/vo/m/e", "end")
    with pytest.raises(Conflict, match=BELOW_A_MOVE):
        await listener.around(lambda db: register_copying(db, "/vo/m/d/f", desy))
    records = {doc["_id"]: [(r["se"], r["status"]) for r in doc["replicas"]]
               for doc in await catalogue_db["files"].find({}).to_list()}
    assert records == {"/vo/m/e/f": [("CERN-DISK", "available"), ("DESY-DISK", "lost")],
                       "/vo/m/e/g": [("CERN-DISK", "available")]}
    await assert_exact(catalogue_db)


@pytest.mark.parametrize("until", ["end", "copied"])
async def test_a_file_registered_that_a_directory_move_carried_away_is_given_up_where_it_went(
    catalogue_db: AsyncDatabase[Document], settings: Settings, mongodb_uri: str, until: str,
) -> None:
    """A registration inserts its file just after a directory move above it looked for writers;
    the move reads the new record and copies it, and has ended (or only copied it) when the
    registration looks and gives the file up. Before, its delete at the old LFN missed the copy:
    the file stayed at the new LFN, never counted. Now it marks its record withdrawn (a move
    that copied it takes the copy back and leaves it), waits for the move to pass, and deletes
    it wherever it is (by its GUID)."""
    await registered(catalogue_db, ["/vo/m/d/f", "/vo/m/d/g"])
    guids = await lfns_and_guids(catalogue_db)
    listener = MoveAroundAPush(mongodb_uri, settings.database, "/vo/m/d", "/vo/m/e", until, trigger="insert")
    new = [{"lfn": "/vo/m/d/new", "size": 7, "adler32": "00000001", "replicas": [{"se": "DESY-DISK"}]}]
    answer = await listener.around(lambda db: register_files(db, ADMIN, new))
    assert answer["failed"] == {"/vo/m/d/new": BELOW_A_MOVE}
    assert await lfns_and_guids(catalogue_db) == {"/vo/m/e/f": guids["/vo/m/d/f"], "/vo/m/e/g": guids["/vo/m/d/g"]}
    await assert_exact(catalogue_db)
