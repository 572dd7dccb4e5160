"""A rule made once however often its call is sent (`rules.rule_requests`): `add_rule` names its
call, and the same call sent again (its answer lost on the way back, the API restarted, a script
run again with the same `--request-id`) answers the rule the first sending made; one rule is
stored, its quota and locks made once. Before, every sending made a rule of its own, and an SDK
call that met a restarting API failed at once; reads, `add_rule` and the requests (queued once
per movement, `transfers.requests`' active_key) now ride it out."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import aiohttp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port
from cairn.sdk import Client
from kernel.db import Document
from kernel.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from kernel.process import stop_processes
from kernel.settings import Settings
from rules.triggers import RULES
from tests.fixtures.api import RunningApi, api_on
from tests.fixtures.api_process import start_api_process
from tests.fixtures.cli import run_cli
from tests.fixtures.portal import PortalFactory
from tests.fixtures.rules import dataset_on_src, tiered_ses
from tests.fixtures.tcp_gate import TcpGate
from tests.fixtures.transfers import add_ses, disk_se, put_files
from transfers.requests import REQUESTS

T = TypeVar("T")


@pytest.fixture
async def tiered(database: AsyncDatabase[Document], tmp_path: Path) -> list[str]:
    tier1 = await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", [f"/vo/ds/f{i}" for i in range(4)], size=1000)
    return tier1


async def answer_lost(api: RunningApi, token: str, request_line: bytes,
                      call: Callable[[Client], Awaitable[T]]) -> T:
    """call() through a gate in front of the API that loses the answer to the first request
    starting with request_line (carried out by the server, its answer broken on the way back)."""
    port = urlparse(api.url).port
    assert port is not None
    gate = TcpGate(port)
    await gate.open()
    try:
        async with Client(f"http://127.0.0.1:{gate.port}", token) as client:
            await client.whoami()  # the API answered this client: one away since is waited for
            gate.lose_reply_of = request_line
            answer = await call(client)
    finally:
        await gate.close()
    assert gate.replies_lost == 1
    return answer


async def sent_at_once(api: RunningApi, token: str, path: str, body: dict[str, Any],
                       times: int = 6) -> list[tuple[int, dict[str, Any]]]:
    """The same POST sent `times` times at once: each one's status and answer."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:

        async def send() -> tuple[int, dict[str, Any]]:
            async with session.post(f"{api.url}/api/v1{path}", json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        return list(await asyncio.gather(*(send() for _ in range(times))))


async def _rules_on(database: AsyncDatabase[Document], did: str) -> list[Document]:
    return await database[RULES].find({"did": did}).to_list()


async def test_a_call_sent_again_answers_the_rule_its_first_sending_made(
    api: RunningApi, admin: Client, tiered: list[str], database: AsyncDatabase[Document],
) -> None:
    key = uuid.uuid4().hex
    first = await admin.add_rule("vo:ds", 1, "tier=1", comment="keep", request_id=key)
    again = await admin.add_rule("vo:ds", 1, "tier=1", comment="keep", request_id=key)
    assert again["id"] == first["id"] and again["created"] == first["created"]
    assert "request" not in first and "request_id" not in first  # bookkeeping, not shown
    assert [r["_id"] for r in await _rules_on(database, "vo:ds")] == [first["id"]]
    # Without a key of its own, each call is a new one (the SDK names every call afresh).
    other = await admin.add_rule("vo:ds", 1, "tier=1", comment="keep")
    assert other["id"] != first["id"] and len(await _rules_on(database, "vo:ds")) == 2


async def test_a_key_sent_with_other_settings_or_after_its_rule_went_is_refused(
    api: RunningApi, admin: Client, tiered: list[str], database: AsyncDatabase[Document],
) -> None:
    key = uuid.uuid4().hex
    rule = await admin.add_rule("vo:ds", 1, "tier=1", request_id=key)
    with pytest.raises(Conflict, match="other settings"):
        await admin.add_rule("vo:ds", 2, "tier=1", request_id=key)
    await admin.delete_rule(rule["id"])
    with pytest.raises(Conflict, match="deleted or withdrawn since"):
        await admin.add_rule("vo:ds", 1, "tier=1", request_id=key)
    assert [r["_id"] for r in await _rules_on(database, "vo:ds")] == [rule["id"]]
    for bad in ("short", "x" * 129, "has space", "semi;colon"):
        with pytest.raises(InvalidInput, match="request_id"):
            await admin.add_rule("vo:ds", 1, "tier=1", request_id=bad)
    assert len(await _rules_on(database, "vo:ds")) == 1


async def test_one_key_names_one_call_per_caller(
    api: RunningApi, admin: Client, tiered: list[str], database: AsyncDatabase[Document],
) -> None:
    key = "nightly-2026-12-07"
    async with api.client(api.token(sub="alice", scopes=("rules.read", "rules.write"))) as alice, \
            api.client(api.token(sub="bob", scopes=("rules.read", "rules.write"))) as bob:
        mine = await alice.add_rule("vo:ds", 1, "tier=1", request_id=key)
        theirs = await bob.add_rule("vo:ds", 1, "tier=1", request_id=key)
    assert mine["id"] != theirs["id"] and (mine["account"], theirs["account"]) == ("alice", "bob")
    assert len(await _rules_on(database, "vo:ds")) == 2


async def test_two_sendings_at_once_make_one_rule(
    api: RunningApi, tiered: list[str], database: AsyncDatabase[Document],
) -> None:
    answers = await sent_at_once(api, api.admin_token, "/rules", {"did": "vo:ds", "copies": 1, "expression": "tier=1",
                                                                  "request_id": uuid.uuid4().hex})
    assert {status for status, _ in answers} == {201}
    assert len({str(answer["id"]) for _, answer in answers}) == 1
    assert len(await _rules_on(database, "vo:ds")) == 1


async def test_a_rule_whose_answer_was_lost_is_made_once(
    api: RunningApi, tiered: list[str], database: AsyncDatabase[Document],
) -> None:
    rule = await answer_lost(api, api.admin_token, b"POST /api/v1/rules ", lambda c: c.add_rule("vo:ds", 1, "tier=1"))
    assert [r["_id"] for r in await _rules_on(database, "vo:ds")] == [rule["id"]]


async def test_the_cli_run_again_with_its_request_id_answers_the_same_rule(
    api: RunningApi, tiered: list[str], database: AsyncDatabase[Document],
) -> None:
    args = ("rule", "add", "vo:ds", "--copies", "1", "-e", "tier=1", "--request-id", "cron-job-42", "--json")
    first = await run_cli(api.url, api.admin_token, *args)
    again = await run_cli(api.url, api.admin_token, *args)
    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    assert json.loads(first.stdout)["id"] == json.loads(again.stdout)["id"]
    assert len(await _rules_on(database, "vo:ds")) == 1


async def test_reads_streams_and_a_rule_ride_out_a_restart_of_the_api_server(
    api: RunningApi, tiered: list[str], settings: Settings, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    port = free_port()
    server = await asyncio.to_thread(start_api_process, settings, port, tmp_path / "server.log")
    try:
        async with Client(f"http://127.0.0.1:{port}", api.admin_token) as client:
            assert (await client.stat("/vo/ds/f0"))["size"] == 1000
            os.kill(server.pid, signal.SIGKILL)
            await asyncio.to_thread(server.wait)

            async def start_again() -> None:
                await asyncio.sleep(1.5)
                nonlocal server
                server = await asyncio.to_thread(start_api_process, settings, port, tmp_path / "server.log")

            restart = asyncio.ensure_future(start_again())
            began = time.monotonic()

            async def listed() -> list[str]:
                return [entry["name"] async for entry in client.ls("/vo/ds")]

            stat, rule, names, _ = await asyncio.gather(
                client.stat("/vo/ds/f1"), client.add_rule("vo:ds", 1, "tier=1"), listed(),
                client.put_site("SITE-Z", description="z"))  # a PUT sets the whole site: safe to send again
            await restart
            assert stat["size"] == 1000 and time.monotonic() - began >= 1.5
            assert names == [f"f{i}" for i in range(4)]
            assert (await client.get_site("SITE-Z"))["description"] == "z"
            assert [r["_id"] for r in await _rules_on(database, "vo:ds")] == [rule["id"]]
        async with Client(f"http://127.0.0.1:{port}", api.admin_token, ride_out_s=0) as impatient:
            await impatient.whoami()
            os.kill(server.pid, signal.SIGKILL)
            await asyncio.to_thread(server.wait)
            with pytest.raises(ServiceUnavailable):  # told at once: no ride-out asked for
                await impatient.stat("/vo/ds/f1")
    finally:
        stop_processes([server], timeout_s=15)


async def test_a_replication_whose_answer_was_lost_is_queued_once(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    source, dest = disk_se("SRC-DISK", tmp_path / "src"), disk_se("DST-DISK", tmp_path / "dst")
    await add_ses(database, source, dest)
    await put_files(database, [source], ["/vo/r/f0", "/vo/r/f1"])
    queued = await answer_lost(api, api.admin_token, b"POST /api/v1/requests/transfers ",
                               lambda c: c.replicate(["/vo/r/f0", "/vo/r/f1"], "DST-DISK"))
    assert not queued["failed"]
    stored = await database[REQUESTS].find({"lfn": {"$in": ["/vo/r/f0", "/vo/r/f1"]}}).to_list()
    assert sorted(r["_id"] for r in stored) == sorted(str(r) for r in queued["successful"].values())


async def test_the_wizard_sent_twice_makes_one_rule(
    api: RunningApi, tiered: list[str], database: AsyncDatabase[Document], portal: PortalFactory,
) -> None:
    async with portal(api.admin_token) as user:
        form = await user.get("/ui/rule-wizard")
        found = re.search(r'name="request_id" value="([0-9a-f]{32})"', form.text)
        assert found, form.text[:500]
        fields = {"did": "vo:ds", "copies": "1", "expression": "tier=1", "request_id": found.group(1)}
        first = await user.post("/ui/rule-wizard", fields)  # a double click: the same form twice
        again = await user.post("/ui/rule-wizard", fields)
        assert first.status == again.status == 200 and first.url == again.url and "/ui/rules/" in first.url
        refused = await user.post("/ui/rule-wizard", {**fields, "expression": "tier=("})
        assert refused.status == 400 and found.group(1) not in refused.text  # a new call once refused
    assert len(await _rules_on(database, "vo:ds")) == 1


JOBS_SCOPES = ("jobs.read", "jobs.write")


def _parametric(tag: str, count: int) -> dict[str, object]:
    return {"name": tag, "executable": "/bin/echo", "arguments": ["%(param)s"],
            "parameters": {"start": 0, "stop": count}}


async def test_a_submission_sent_again_answers_the_jobs_its_first_sending_stored(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    async with api.client(api.token(sub="alice", scopes=JOBS_SCOPES)) as alice, \
            api.client(api.token(sub="bob", scopes=JOBS_SCOPES)) as bob:
        first = await alice.submit_jobs([_parametric("sweep", 5)], request_id="sweep-2026-12-07")
        again = await alice.submit_jobs([_parametric("sweep", 5)], request_id="sweep-2026-12-07")
        assert again == first and len(first) == 5
        assert not {"request", "request_digest"} & set(await alice.get_job(first[0]))  # bookkeeping, not shown
        with pytest.raises(Conflict, match="other jobs"):
            await alice.submit_jobs([_parametric("sweep", 6)], request_id="sweep-2026-12-07")
        theirs = await bob.submit_jobs([_parametric("sweep", 5)], request_id="sweep-2026-12-07")  # bob's own
        assert not set(theirs) & set(first)
        unnamed = await alice.submit_jobs({"executable": "/bin/true"})  # each unnamed call is a new one
        assert unnamed != (await alice.submit_jobs({"executable": "/bin/true"}))
    assert await database["jobs"].count_documents({"name": "sweep"}) == 10


async def test_a_submission_whose_answer_was_lost_or_sent_six_times_at_once_stores_its_jobs_once(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    alice = api.token(sub="alice", scopes=JOBS_SCOPES)
    ids = await answer_lost(api, alice, b"POST /api/v1/jobs ", lambda c: c.submit_jobs([_parametric("lost", 3)]))
    assert sorted(d["_id"] for d in await database["jobs"].find({"name": "lost"}).to_list()) == sorted(ids)
    answers = await sent_at_once(api, alice, "/jobs", {"jobs": [_parametric("racing", 40)],
                                                       "request_id": uuid.uuid4().hex})
    assert {status for status, _ in answers} == {201}, answers
    assert len({tuple(answer["ids"]) for _, answer in answers}) == 1
    assert await database["jobs"].count_documents({"name": "racing"}) == 40


async def test_the_cli_run_again_with_its_request_id_submits_once(
    api: RunningApi, database: AsyncDatabase[Document], tmp_path: Path,
) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"jobs": [{"name": "cron", "executable": "/bin/true"}]}))
    args = ("job", "submit", str(spec), "--request-id", "cron-job-42", "--json")
    token = api.token(sub="alice", scopes=JOBS_SCOPES)
    first, again = await run_cli(api.url, token, *args), await run_cli(api.url, token, *args)
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    assert json.loads(first.stdout)["ids"] == json.loads(again.stdout)["ids"]
    assert await database["jobs"].count_documents({"name": "cron"}) == 1


# Calls safe to send twice as they are (the same state, the same answer but for `created`): sent
# again while the API is away or when their answer was lost, not failed at once.
SENT_AGAIN: dict[str, tuple[bytes, Callable[[Client], Awaitable[Any]]]] = {
    "register_files": (b"POST /api/v1/files/register ",
                       lambda c: c.register_files([{"lfn": "/vo/ds/new", "size": 1, "adler32": "00000001"}])),
    "lookup_files": (b"POST /api/v1/files/lookup ", lambda c: c.lookup_files(["/vo/ds/f0"])),
    "get_replicas": (b"POST /api/v1/replicas/resolve ", lambda c: c.get_replicas(["/vo/ds/f0"])),
    "set_metadata": (b"POST /api/v1/metadata/set ", lambda c: c.set_metadata("/vo/ds/f0", {"run": 7})),
    "chmod": (b"POST /api/v1/namespace/chmod ", lambda c: c.chmod("/vo/ds", 0o750)),
    "mkdir_parents": (b"POST /api/v1/namespace/mkdir ", lambda c: c.mkdir("/vo/a/b", parents=True)),
}


@pytest.mark.parametrize("name", sorted(SENT_AGAIN))
async def test_a_call_safe_to_send_twice_is_sent_again_when_its_answer_was_lost(
    api: RunningApi, tiered: list[str], database: AsyncDatabase[Document], name: str,
) -> None:
    prefix, call = SENT_AGAIN[name]
    answer = await answer_lost(api, api.admin_token, prefix, call)
    async with api.client() as client:
        if name == "register_files":
            assert list(answer["successful"]) == ["/vo/ds/new"] and not answer["failed"]
            assert await database["files"].count_documents({"_id": "/vo/ds/new"}) == 1
        if name in ("lookup_files", "get_replicas"):
            assert list(answer["successful"]) == ["/vo/ds/f0"]
        if name == "set_metadata":
            assert (await client.get_metadata("/vo/ds/f0"))["own"]["run"] == 7
        if name == "chmod":
            assert (await client.stat("/vo/ds"))["mode"] == 0o750
        if name == "mkdir_parents":
            assert (await client.stat("/vo/a/b"))["type"] == "directory"


async def test_a_first_call_answered_503_waits_for_the_database_and_a_wrong_url_fails_at_once(
    settings: Settings, database: AsyncDatabase[Document], mongodb_uri: str,
) -> None:
    db_port = urlparse(mongodb_uri).port
    assert db_port is not None
    gate = TcpGate(db_port)  # closed: the API's database is away when the client first calls

    async def back_in(seconds: float) -> None:
        await asyncio.sleep(seconds)
        await gate.open()

    try:
        async with api_on(settings, mongodb_uri=f"mongodb://127.0.0.1:{gate.port}/", db_timeout_ms=300) as (url, token):
            async with Client(url, token) as client:
                began = time.monotonic()
                with pytest.raises(ServiceUnavailable):  # not safe to send twice: told at once
                    await client.remove_files(["/cta/none"])
                assert time.monotonic() - began < 5
            async with Client(url, token) as client:  # a new one: its first call meets 503
                opening = asyncio.ensure_future(back_in(1.5))
                began = time.monotonic()
                with pytest.raises(NotFound):  # answered once the database is back: there is no such file
                    await client.stat("/cta/none")
                assert time.monotonic() - began >= 1.5
                await opening
            await gate.cut()  # away again: the command line says that it waits, and for how long
            opening = asyncio.ensure_future(back_in(1.5))
            shown = await run_cli(url, token, "stat", "/cta/none")
            await opening
            assert shown.returncode == 2 and "/cta/none does not exist" in shown.stderr, shown.stderr
            assert shown.stderr.count("trying again for up to") == 1, shown.stderr
            async with Client(f"http://127.0.0.1:{free_port()}", token) as nowhere:  # never reached: at once
                began = time.monotonic()
                with pytest.raises(ServiceUnavailable, match="cannot reach"):
                    await nowhere.stat("/cta")
                assert time.monotonic() - began < 2
    finally:
        await gate.close()
